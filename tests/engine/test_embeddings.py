from __future__ import annotations

from diffusiond.domain.params import EmbeddingRef, GenerateSpec, Txt2Img
from diffusiond.engine.runner import Engine
from tests.engine.conftest import Context, diffusion

PROMPT = "a portrait in the style of tinyemb"


def test_embedding_token_is_used_and_removed(engine: Engine, ctx: Context) -> None:
    tokenizer = engine.cache.get("tiny").base.tokenizer
    vocab_before = len(tokenizer)

    def run(**kwargs: object) -> bytes:
        spec = GenerateSpec(stages=(Txt2Img(diffusion(prompt=PROMPT, **kwargs)),), seed=17)
        return engine.run(spec, ctx)[0].image.tobytes()

    plain = run()
    embedded = run(embeddings=(EmbeddingRef("tiny-emb", token="tinyemb"),))
    again = run()
    assert embedded != plain  # the token now maps to the learned vectors
    assert again == plain  # and after the job the tokenizer and text encoder are as before
    assert len(tokenizer) == vocab_before
    assert "tinyemb" not in tokenizer.get_vocab()
    encoder = engine.cache.get("tiny").base.text_encoder
    assert encoder.get_input_embeddings().weight.shape[0] == vocab_before


def test_embedding_defaults_to_model_id_token(engine: Engine, ctx: Context) -> None:
    prompt = "a portrait in the style of tiny-emb"
    runs = [
        engine.run(GenerateSpec(stages=(Txt2Img(diffusion(prompt=prompt, embeddings=e)),), seed=17), ctx)[0].image
        for e in ((), (EmbeddingRef("tiny-emb"),))
    ]
    assert runs[0].tobytes() != runs[1].tobytes()
