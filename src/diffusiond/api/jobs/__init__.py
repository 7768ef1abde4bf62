"""The `/v1/jobs` dialect (seed 001): multi-stage async jobs, input resources, SSE progress."""
