"""CLIP text tokenisation through the `tokenizers` library: OpenAI's BPE merges file or a tokenizer.json."""

from __future__ import annotations

import gzip
import html
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

log = logging.getLogger(__name__)

START_TOKEN = "<|startoftext|>"
END_TOKEN = "<|endoftext|>"
CONTEXT_LENGTH = 77
# OpenAI's simple_tokenizer keeps the first 49152 - 256 - 2 merges: with 512 byte tokens and the two
# specials that gives the 49408-entry vocabulary every CLIP text encoder was trained with.
N_MERGES = 49152 - 256 - 2
# CLIP's word splitter (simple_tokenizer.py), applied after lower-casing.
CLIP_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


class TokenizerLoadError(ValueError):
    """A tokenizer file that is missing or is neither a tokenizer.json nor a CLIP BPE merges file."""


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table (the first 256 vocabulary entries)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, codes, strict=True)}


def read_merges(path: Path) -> list[tuple[str, str]]:
    """The merge rules of a `bpe_simple_vocab_16e6.txt(.gz)` file, header line skipped."""
    if path.suffix == ".gz":
        with gzip.open(path) as f:
            raw = f.read()
    else:
        raw = path.read_bytes()
    lines = raw.decode("utf-8").split("\n")[1 : N_MERGES + 1]
    merges: list[tuple[str, str]] = []
    for number, line in enumerate(lines, start=2):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise TokenizerLoadError(f"{path}: line {number}: expected a merge 'a b', got {line!r}")
        merges.append((parts[0], parts[1]))
    if len(merges) != N_MERGES:
        raise TokenizerLoadError(f"{path}: expected {N_MERGES} merges, found {len(merges)}")
    return merges


def clip_bpe_tokenizer(merges_path: Path) -> Tokenizer:
    """A `tokenizers.Tokenizer` equal to OpenAI CLIP's simple_tokenizer, built from its merges file."""
    merges = read_merges(merges_path)
    symbols = list(bytes_to_unicode().values())
    vocab_list = [*symbols, *(s + "</w>" for s in symbols), *("".join(m) for m in merges), START_TOKEN, END_TOKEN]
    vocab = {token: i for i, token in enumerate(vocab_list)}
    tok = Tokenizer(
        models.BPE(vocab=vocab, merges=merges, unk_token=END_TOKEN, end_of_word_suffix="</w>", fuse_unk=False)
    )
    tok.normalizer = normalizers.Sequence(
        [
            normalizers.NFC(),
            normalizers.Replace(Regex(r"\s+"), " "),
            normalizers.Strip(),
            normalizers.Lowercase(),
        ]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(CLIP_SPLIT), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.Sequence([decoders.ByteLevel(), decoders.Replace("</w>", " ")])
    tok.add_special_tokens([START_TOKEN, END_TOKEN])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{START_TOKEN} $A {END_TOKEN}",
        special_tokens=[(START_TOKEN, vocab[START_TOKEN]), (END_TOKEN, vocab[END_TOKEN])],
    )
    return tok


class ClipTokenizer:
    """Texts -> int64 [N, context_length] token ids, start/end tokens added, zero padded, truncated.

    `path` is either a Hugging Face `tokenizer.json` (OpenCLIP and HF CLIP exports ship one) or OpenAI's
    `bpe_simple_vocab_16e6.txt.gz`. Over-long texts are cut so that they still end with the end token,
    as `clip.tokenize(..., truncate=True)` does.
    """

    def __init__(self, path: str | Path, context_length: int = CONTEXT_LENGTH, pad_id: int = 0) -> None:
        self.path = Path(path)
        self.context_length = context_length
        if not self.path.is_file():
            raise TokenizerLoadError(f"tokenizer file {self.path} does not exist")
        if self.path.name.endswith(".json"):
            try:
                self.tokenizer = Tokenizer.from_file(str(self.path))
            except Exception as exc:  # the Rust side raises a bare Exception subclass on any bad file
                raise TokenizerLoadError(f"{self.path}: not a tokenizer.json: {exc}") from exc
        elif self.path.name.endswith((".txt", ".txt.gz")):
            self.tokenizer = clip_bpe_tokenizer(self.path)
        else:
            raise TokenizerLoadError(
                f"{self.path}: expected a tokenizer.json or a CLIP BPE merges file (.txt or .txt.gz)"
            )
        self.tokenizer.enable_truncation(max_length=context_length)
        self.tokenizer.enable_padding(length=context_length, pad_id=pad_id, pad_token=self._pad_token(pad_id))
        self.end_id = self.tokenizer.token_to_id(END_TOKEN)

    def _pad_token(self, pad_id: int) -> str:
        return self.tokenizer.id_to_token(pad_id) or ""

    def encode(self, texts: str | Sequence[str]) -> npt.NDArray[np.int64]:
        """Token ids int64 [N, context_length] for one text or a list of texts."""
        batch = [texts] if isinstance(texts, str) else list(texts)
        # OpenAI's basic_clean also runs ftfy; html unescaping is the part that changes ordinary captions.
        cleaned = [html.unescape(html.unescape(t)) for t in batch]
        encodings = self.tokenizer.encode_batch(cleaned)
        return np.array([e.ids for e in encodings], dtype=np.int64).reshape(len(batch), self.context_length)

    def attention_mask(self, ids: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """1 up to and including the end token, 0 after it (for encoders that take a mask input)."""
        if self.end_id is None:
            return np.asarray(ids != 0, dtype=np.int64)
        ends = np.argmax(ids == self.end_id, axis=1)
        return np.asarray(np.arange(ids.shape[1])[None, :] <= ends[:, None], dtype=np.int64)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of one row of ids; padding after the end token is dropped."""
        row = [int(i) for i in ids]
        if self.end_id is not None and self.end_id in row:
            row = row[: row.index(self.end_id)]
        return str(self.tokenizer.decode(row, skip_special_tokens=True)).strip()
