"""Prompt: positive and negative prompts in the request's weighting syntax -> CONDITIONING."""

from __future__ import annotations

from comfy_api.latest import io

from ...engines.prompting.encode import encode_text
from ...engines.prompting.parse import SYNTAXES
from .common import CATEGORY, node_id


class PromptNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("Prompt"),
            display_name="Prompt (imageInference)",
            category=CATEGORY,
            description=(
                "Encodes `positivePrompt` and `negativePrompt` as `promptWeighting` reads them: none (literal text; "
                "brackets are not weights), compel (word+, (words)1.2, (\"a\", \"b\").blend(1, 0.8), .and()) or "
                "sdEmbeds ((text), (text:2.5), [text]). Long prompts are chunked; `__BLANK__` means no prompt. "
                "`clipSkip` stops the CLIP text encoder that many layers early (-1 = the model's default)."
            ),
            inputs=[
                io.Clip.Input("clip", tooltip="The text encoder(s) of the model."),
                io.String.Input("positivePrompt", multiline=True, default="",
                                tooltip="imageInference `positivePrompt` (2-3000 characters, or __BLANK__)."),
                io.String.Input("negativePrompt", multiline=True, default="",
                                tooltip="imageInference `negativePrompt`; ignored by the sampler when CFGScale <= 1."),
                io.Combo.Input("promptWeighting", options=list(SYNTAXES), default="none",
                               tooltip="imageInference `promptWeighting`; none = field not set (literal prompt)."),
                io.Int.Input("clipSkip", default=-1, min=-1, max=4,
                             tooltip="imageInference `clipSkip` (0-4); -1 = not set, the model's default layer."),
            ],
            outputs=[io.Conditioning.Output(display_name="positive"), io.Conditioning.Output(display_name="negative")],
        )

    @classmethod
    def execute(cls, clip, positivePrompt: str, negativePrompt: str, promptWeighting: str,
                clipSkip: int) -> io.NodeOutput:
        skip = clipSkip if clipSkip >= 0 else None
        positive = encode_text(clip, positivePrompt, promptWeighting, "positivePrompt", skip)
        negative = encode_text(clip, negativePrompt, promptWeighting, "negativePrompt", skip)
        return io.NodeOutput(positive, negative)
