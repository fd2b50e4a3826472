"""Streaming text out of generated tokens: whole characters only, stop strings cut exactly.

``IncrementalDetokenizer`` decodes a short window of tokens at each step and emits only the text
that is complete (the prefix-offset scheme of vLLM and TGI): a token that ends inside a UTF-8
character decodes to U+FFFD, so its text waits for the token that completes the character.
Decoding a window that starts a few tokens back (in the prompt, at first) keeps the spaces that
tokenizers drop at the start of a decode call.

``StopStrings`` holds back text that could be the start of a stop string and, once one appears,
cuts the output right before it.
"""

from __future__ import annotations

from typing import Sequence

_CONTEXT_TOKENS = 5  # tokens of the prompt that open the first decode window


class IncrementalDetokenizer:
    def __init__(self, tokenizer, prompt_ids: Sequence[int], skip_special_tokens: bool = True):
        self._tok = tokenizer
        self._skip = skip_special_tokens
        self._ids = [int(t) for t in prompt_ids[-_CONTEXT_TOKENS:]]
        if self._decode(self._ids).endswith("\ufffd"):  # the prompt ends inside a character: the
            self._ids = []  # answer's first bytes must not complete it, so start clean
        self._prefix = 0  # window start
        self._read = len(self._ids)  # tokens whose text has been emitted

    def _decode(self, ids) -> str:
        return self._tok.decode(ids, skip_special_tokens=self._skip)

    def add(self, token_id: int) -> str:
        """Append one token; return the text that became complete (maybe "")."""
        self._ids.append(int(token_id))
        prefix_text = self._decode(self._ids[self._prefix:self._read])
        new_text = self._decode(self._ids[self._prefix:])
        if len(new_text) <= len(prefix_text) or new_text.endswith("\ufffd"):
            return ""  # an unfinished character (or nothing visible yet)
        delta = new_text[len(prefix_text):]
        self._prefix, self._read = self._read, len(self._ids)
        if self._prefix > 4 * _CONTEXT_TOKENS:  # forget tokens no window will read again
            del self._ids[:self._prefix]
            self._read -= self._prefix
            self._prefix = 0
        return delta

    def flush(self) -> str:
        """The text still held back (an unfinished character decodes as U+FFFD), at the end."""
        prefix_text = self._decode(self._ids[self._prefix:self._read])
        new_text = self._decode(self._ids[self._prefix:])
        self._prefix = self._read = len(self._ids)
        return new_text[len(prefix_text):] if len(new_text) > len(prefix_text) else ""


class StopStrings:
    """Feed text in pieces; get back what is safe to emit and whether a stop string was met."""

    def __init__(self, stops: Sequence[str]):
        self.stops = tuple(s for s in stops if s)
        self._longest = max((len(s) for s in self.stops), default=0)
        self.text = ""  # all text fed, up to the cut once stopped
        self.emitted = 0  # characters of ``text`` handed out
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped or not piece:
            return ""
        start = max(0, len(self.text) - self._longest + 1)
        self.text += piece
        if self.stops:
            found = [i for i in (self.text.find(s, start) for s in self.stops) if i >= 0]
            if found:
                self.text = self.text[:min(found)]
                self.stopped = True
                return self._take(len(self.text))
        return self._take(len(self.text) - self._held())

    def _held(self) -> int:
        """Length of the longest tail of the text that begins some stop string."""
        best = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(self.text)), best, -1):
                if self.text.endswith(s[:n]):
                    best = n
                    break
        return best

    def flush(self) -> str:
        return self._take(len(self.text))

    def _take(self, end: int) -> str:
        end = max(end, self.emitted)
        out = self.text[self.emitted:end]
        self.emitted = end
        return out
