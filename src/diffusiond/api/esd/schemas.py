"""The AWS-extension API's wire types (seed 000, "Stable Diffusion AWS extension API v2023-07-05").

Request bodies ignore fields they do not know, as the original Lambdas do; responses carry the
original's field names (camelCase, snake_case and the odd `endpont_name` as they are).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

CHECKPOINT_TYPES = ("Stable-diffusion", "embeddings", "Lora", "hypernetworks", "ControlNet", "VAE")
CheckpointType = Literal["Stable-diffusion", "embeddings", "Lora", "hypernetworks", "ControlNet", "VAE"]


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


# ---- errors ---------------------------------------------------------------------------------------


class InferenceError(BaseModel):
    """`/inference/*`: FastAPI's error body."""

    detail: str


class LambdaError(BaseModel):
    """`/checkpoint(s)`, `/model(s)`, `/train(s)`, `/dataset(s)`: the status inside the body too."""

    statusCode: int
    error: str
    errorMsg: str


# ---- inference --------------------------------------------------------------------------------------


class Message(BaseModel):
    message: str


class InferenceRequest(Body):
    """`run-sagemaker-inference`: routing fields, models, and A1111's txt2img/img2img fields (read by
    the shared A1111 translation). Without `prompt` and with a `Stable-diffusion` map, the
    parameters come from the `config/aigc.json` the client uploaded first."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    sagemaker_endpoint: str = Field(min_length=1, max_length=100)
    task_type: str = Field(min_length=1, max_length=40)
    stable_diffusion_model: list[str] | str | None = None
    embeddings: list[str] | dict[str, Any] | None = None
    lora_model: list[str] | None = None
    hypernetwork_model: list[str] | None = None
    controlnet_model: list[str] | None = None
    stable_diffusion: dict[str, Any] | None = Field(None, alias="Stable-diffusion")
    lora: dict[str, Any] | None = Field(None, alias="Lora")
    hypernetworks: dict[str, Any] | None = None
    controlnet: dict[str, Any] | None = Field(None, alias="ControlNet")


class InferenceStarted(BaseModel):
    inference_id: str
    status: str  # inprogress; failure when the request could not start
    endpoint_name: str | None = None
    output_path: str | None = None
    error: str | None = None
    model_name: str | None = None  # a merge: the model it registers


class InferenceJob(BaseModel):
    """One inference (or merge) job, as `list-inference-jobs` and `get-inference-job` show it."""

    model_config = ConfigDict(extra="allow")

    InferenceJobId: str
    startTime: str
    status: str  # inprogress | succeed | failed
    taskType: str
    endpoint_name: str | None = None
    completeTime: str | None = None
    image_names: list[str] | None = None
    inference_info_name: str | None = None
    sagemakerRaw: str | None = None
    error: str | None = None
    model_name: str | None = None


class DeployRequest(Body):
    instance_type: str = Field(min_length=1, max_length=64)
    initial_instance_count: int | str = 1
    endpoint_name: str | None = Field(None, max_length=63)
    autoscaling_enabled: bool = False

    @field_validator("initial_instance_count")
    @classmethod
    def _count(cls, value: int | str) -> int | str:
        if isinstance(value, str) and not value.strip().isdigit():
            raise ValueError("must be a whole number")
        return value


class DeleteRequest(Body):
    delete_endpoint_list: list[str] = Field(min_length=1, max_length=50)


class DeploymentJob(BaseModel):
    model_config = ConfigDict(extra="allow")

    EndpointDeploymentJobId: str
    startTime: str
    status: str  # inprogress | success | failed | deleted
    endpoint_name: str
    endpoint_status: str  # Creating | InService | Failed | Deleting | Deleted
    endTime: str | None = None
    error: str | None = None
    instance_type: str
    initial_instance_count: int
    current_instance_count: int
    autoscaling_enabled: bool


class MergeRequest(Body):
    primary_model_name: str = Field(min_length=1, max_length=200)
    secondary_model_name: str = Field(min_length=1, max_length=200)
    tertiary_model_name: str | None = Field(None, max_length=200)
    multiplier: float = Field(0.3, ge=0.0, le=1.0)
    method: str | None = Field(None, max_length=40)
    model_name: str | None = Field(None, max_length=100)


# ---- checkpoints and models -------------------------------------------------------------------------


class FilePart(Body):
    filename: str = Field(min_length=1, max_length=200)
    parts_number: int = Field(1, ge=1)


class CheckpointCreate(Body):
    checkpoint_type: CheckpointType
    filenames: list[FilePart] = Field(default_factory=list, max_length=20)
    params: dict[str, Any] = Field(default_factory=dict)


class PartTag(Body):
    ETag: str = Field(max_length=200)
    PartNumber: int = Field(ge=1)


class CheckpointUpdate(Body):
    checkpoint_id: str = Field(min_length=1, max_length=40)
    status: Literal["Active", "Disabled"]
    multi_parts_tags: dict[str, list[PartTag] | dict[str, Any]] = Field(default_factory=dict)


class CheckpointPublic(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    type: str
    s3_location: str
    status: str
    params: dict[str, Any]


class CheckpointCreated(BaseModel):
    statusCode: int = 200
    checkpoint: CheckpointPublic
    s3PresignUrl: dict[str, list[str]]


class CheckpointUpdated(BaseModel):
    statusCode: int = 200
    checkpoint: CheckpointPublic


class CheckpointListed(BaseModel):
    id: str
    s3Location: str
    type: str
    status: str
    name: list[str]
    created: float
    params: dict[str, Any] = Field(default_factory=dict)


class CheckpointList(BaseModel):
    statusCode: int = 200
    checkpoints: list[CheckpointListed]


class ModelCreate(Body):
    model_type: str = Field("Stable-diffusion", max_length=40)
    name: str = Field(pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,30}$")
    checkpoint_id: str | None = Field(None, max_length=40)
    filenames: list[FilePart] = Field(default_factory=list, max_length=1)
    params: dict[str, Any] = Field(default_factory=dict)


class ModelUpdate(Body):
    model_id: str = Field(min_length=1, max_length=40)
    status: Literal["Creating", "Fail"]
    multi_parts_tags: dict[str, list[PartTag] | dict[str, Any]] = Field(default_factory=dict)


class ModelJob(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    status: str
    s3_base: str
    model_type: str
    params: dict[str, Any]


class ModelCreated(BaseModel):
    statusCode: int = 200
    job: ModelJob
    s3PresignUrl: dict[str, list[str]]


class ModelJobStarted(BaseModel):
    output_path: str
    id: str
    endpointName: str
    jobStatus: str
    jobType: str


class ModelUpdated(BaseModel):
    statusCode: int = 200
    job: ModelJobStarted


class ModelListed(BaseModel):
    id: str
    model_name: str
    created: float
    params: dict[str, Any]
    status: str
    output_s3_location: str


class ModelList(BaseModel):
    statusCode: int = 200
    models: list[ModelListed]


# ---- training and datasets --------------------------------------------------------------------------


class TrainCreate(Body):
    train_type: str = Field("Stable-diffusion", max_length=40)
    model_id: str = Field(min_length=1, max_length=40)
    params: dict[str, Any] = Field(default_factory=dict)
    filenames: list[str] = Field(default_factory=list, max_length=20)


class TrainUpdate(Body):
    train_job_id: str = Field(min_length=1, max_length=40)
    status: str = Field(max_length=40)


class TrainJob(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    status: str
    trainType: str
    params: dict[str, Any]
    input_location: str
    created: float | None = None


class TrainCreated(BaseModel):
    statusCode: int = 200
    job: TrainJob
    s3PresignUrl: dict[str, str]


class TrainUpdated(BaseModel):
    statusCode: int = 200
    job: TrainJob | None = None
    msg: str | None = None


class TrainListed(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    modelName: str
    status: str
    trainType: str
    created: float
    sagemakerTrainName: str
    output_model: str | None = None
    error: str | None = None


class TrainList(BaseModel):
    statusCode: int = 200
    trainJobs: list[TrainListed]


class DatasetFile(Body):
    filename: str = Field(min_length=1, max_length=300)
    name: str | None = Field(None, max_length=200)
    type: str | None = Field(None, max_length=40)
    params: dict[str, Any] = Field(default_factory=dict)


class DatasetCreate(Body):
    dataset_name: str = Field(min_length=1, max_length=200)
    content: list[DatasetFile] = Field(min_length=1, max_length=1000)
    params: dict[str, Any] = Field(default_factory=dict)


class DatasetUpdate(Body):
    dataset_name: str = Field(min_length=1, max_length=200)
    status: Literal["Enabled", "Disabled"]


class DatasetCreated(BaseModel):
    statusCode: int = 200
    datasetName: str
    s3PresignUrl: dict[str, str]


class DatasetUpdated(BaseModel):
    statusCode: int = 200
    datasetName: str
    status: str


class DatasetListed(BaseModel):
    model_config = ConfigDict(extra="allow")

    datasetName: str
    s3: str
    status: str
    timestamp: float


class DatasetList(BaseModel):
    statusCode: int = 200
    datasets: list[DatasetListed]


class DatasetItemPublic(BaseModel):
    key: str
    name: str
    type: str
    preview_url: str
    dataStatus: str


class DatasetItems(BaseModel):
    statusCode: int = 200
    dataset_name: str
    data: list[DatasetItemPublic]
