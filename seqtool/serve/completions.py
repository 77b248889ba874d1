"""OpenAI's completions shape (`POST /v1/completions`) over the generator's streams, so
that the official clients work unchanged.

A choice ends at `max_tokens` ("length") or at the first of the `stop` strings, which is
left out of its text ("stop"). `usage` counts prompt tokens once per prompt, and a
choice's completion tokens as `max_tokens`, or when it stopped, as the tokens of its
text.
"""

from __future__ import annotations

import json
import time
import uuid

from seqtool.errors import SeqtoolError


class Answer:
    """One request's choices: choice i is prompt i // n, sample i % n, seeded `seed + i`
    (as `generate --num-samples` seeds its samples)."""

    def __init__(self, model: str, tokenizer, prompts: list[str], n: int, stops: list[str]):
        self.model, self.tokenizer, self.n, self.stops = model, tokenizer, n, stops
        self.prompt_tokens = sum(len(tokenizer.encode(p or "\n")) for p in prompts)
        self.id, self.created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        self.hold = max((len(s) for s in stops), default=1) - 1  # a stop string may straddle

    def _cut(self, text: str) -> int | None:
        """Where the first stop string starts in `text`, or None."""
        found = [i for s in self.stops if (i := text.find(s)) >= 0]
        return min(found) if found else None

    def _body(self, choices: list[dict], usage: dict | None = None) -> dict:
        body = {
            "id": self.id, "object": "text_completion", "created": self.created,
            "model": self.model, "choices": choices,
        }  # fmt: skip
        if usage is not None:
            body["usage"] = usage
        return body

    async def whole(self, streams, pieces) -> dict:
        """The non-streamed answer; `pieces(stream)` yields a stream's text."""
        choices, tokens = [], 0
        for index, stream in enumerate(streams):
            text, reason = "", "length"
            async for piece in pieces(stream):
                text += piece
                if (cut := self._cut(text)) is not None:
                    text, reason = text[:cut], "stop"
                    break
            tokens += stream.length if reason == "length" else len(self.tokenizer.encode(text))
            choices.append(
                {"text": text, "index": index, "logprobs": None, "finish_reason": reason}
            )
        usage = {
            "prompt_tokens": self.prompt_tokens, "completion_tokens": tokens,
            "total_tokens": self.prompt_tokens + tokens,
        }  # fmt: skip
        return self._body(choices, usage)

    async def events(self, streams, pieces):
        """Server-sent events: chunks of each choice in turn (text held back only while
        it may be the start of a stop string), its last chunk with its finish_reason,
        then `data: [DONE]`. A failure ends the events with {"error": {...}}."""

        def event(index: int, text: str, reason: str | None) -> str:
            choice = {"text": text, "index": index, "logprobs": None, "finish_reason": reason}
            return f"data: {json.dumps(self._body([choice]))}\n\n"

        try:
            for index, stream in enumerate(streams):
                text, sent, reason = "", 0, "length"
                async for piece in pieces(stream):
                    text += piece
                    if (cut := self._cut(text)) is not None:
                        text, reason = text[:cut], "stop"
                        break
                    if len(text) - self.hold > sent:
                        yield event(index, text[sent : len(text) - self.hold], None)
                        sent = len(text) - self.hold
                yield event(index, text[sent:], reason)
        except Exception as err:  # noqa: BLE001 - the status line has gone: say it in the body
            message = str(err) if isinstance(err, SeqtoolError) else "internal error"
            yield f"data: {json.dumps({'error': {'message': message}})}\n\n"
            return
        finally:
            for stream in streams:
                stream.reply.cancelled = True
        yield "data: [DONE]\n\n"
