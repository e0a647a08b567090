"""SQuAD-layout QA data -> FunASR jsonl question-context pairs for CLSR (dataset-independent).

The four paper datasets (Spoken-SQuAD, LibriSQA, SLUE-SQA-5, DRCD/ODSQA) all end up here as a
list of :class:`Example` (one question paired with one spoken context) and leave as

* ``<split>.jsonl``: FunASR's layout, one JSON object per line::

      {"key", "source": abs ctx audio, "source_len": 10 ms frames, "target": ctx transcript,
       "target_len": #words (en) / #chars (zh), "question": text, "context_id", ...
       ["question_source": abs q audio, "question_source_len", "question_target", ...]}

* ``<split>.pairs.jsonl``: clean text pairs for text-encoder pre-training, FlagEmbedding's
  format ``{"query": str, "pos": [str], "neg": []}``;
* ``<split>.stats.json`` and ``<split>.skipped.tsv``: every example that was not written, with
  the reason (missing or unreadable audio, one-to-one filtering, ...). Nothing is dropped
  silently.

Also here: reading and validating SQuAD-layout JSON, sentence splitting (English and Chinese),
joining Spoken-SQuAD's ASR transcripts to the SQuAD text, and segmenting a written paragraph
into the same sentences as a per-sentence recording.

Why one-to-one: SQuAD and DRCD attach several questions to one context. CLSR trains with
in-batch negatives, so two questions of the same context in a batch would make a true pair a
"negative". The paper keeps one question per context ("Spoken-SQuAD*", "DRCD*"); here the kept
question is the first one in file order (deterministic, documented in each recipe README).
"""

from __future__ import annotations

import bisect
import difflib
import json
import os
import re
import tempfile
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

__all__ = [
    "AudioProbe",
    "DataPrepError",
    "EmptySplitError",
    "Example",
    "JoinedParagraph",
    "Paragraph",
    "QA",
    "SplitResult",
    "SquadFormatError",
    "answer_sentence_pairs",
    "atomic_write_text",
    "clean_text",
    "finalize_split",
    "find_files",
    "iter_paragraphs",
    "join_spoken_squad",
    "load_json",
    "load_squad",
    "locate_answer",
    "one_to_one",
    "read_jsonl",
    "segment_like_reference",
    "sentence_index",
    "split_sentences",
    "target_length",
    "write_jsonl",
    "write_pairs",
]


class DataPrepError(ValueError):
    """Input that cannot be prepared; the message is one line naming the file and the problem."""


class SquadFormatError(DataPrepError):
    """A JSON file that is not in the SQuAD layout (or two files that do not belong together)."""


class EmptySplitError(DataPrepError):
    """A split with no usable example left (all audio missing, wrong directory, empty input)."""


# --------------------------------------------------------------------------- text helpers

_WS = re.compile(r"\s+")


def clean_text(text: str) -> str:
    """NFC-normalise and collapse whitespace (SQuAD contexts carry newlines and double spaces)."""
    return _WS.sub(" ", unicodedata.normalize("NFC", str(text))).strip()


def target_length(text: str, lang: str) -> int:
    """FunASR's ``target_len``: words for space-delimited languages, characters for Chinese."""
    if lang == "zh":
        return sum(1 for ch in text if not ch.isspace())
    return len(text.split())


# English sentence end: . ! ? (plus closing quotes/brackets), whitespace, then something that
# starts a sentence. Abbreviations such as "Jr." followed by a lowercase word are not split.
_EN_SENT_END = re.compile(r"(?<=[.!?])[\"'\u201d\u2019)\]]*\s+(?=[\"'\u201c\u2018(\[]?[A-Z0-9])")
# Looser boundary set used only as candidate cut points when aligning to a reference.
_EN_SOFT_END = re.compile(r"(?<=[.!?;:])[\"'\u201d\u2019)\]]*\s+")
# Chinese: 。！？ (full and half width) and ！？ followed by closing quotes.
_ZH_SENT_END = re.compile(r"[。！？!?]+[」』”’）)\"']*")


def split_sentences(text: str, lang: str) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of the sentences of ``text`` (whitespace trimmed).

    English splits at ``. ! ?`` followed by whitespace and an upper-case letter, digit or
    opening quote; Chinese splits after ``。！？`` (and closing quotes that follow them).
    """
    if lang == "zh":
        cuts = [m.end() for m in _ZH_SENT_END.finditer(text)]
    else:
        cuts = [m.end() for m in _EN_SENT_END.finditer(text)]
    bounds = [0] + [c for c in cuts if 0 < c < len(text)] + [len(text)]
    spans = []
    for a, b in zip(bounds, bounds[1:]):
        seg = text[a:b]
        lead = len(seg) - len(seg.lstrip())
        trail = len(seg) - len(seg.rstrip())
        if b - trail > a + lead:
            spans.append((a + lead, b - trail))
    return spans


def sentence_index(spans: Sequence[tuple[int, int]], pos: int) -> int:
    """Index of the sentence span that holds character ``pos`` (the one starting before it)."""
    if not spans:
        raise ValueError("no sentences")
    starts = [s for s, _ in spans]
    return max(0, bisect.bisect_right(starts, pos) - 1)


_WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*")


def _norm_word(word: str) -> str:
    """Lower-case, accents and apostrophes removed: "Levi's" -> "levis" (as ASR writes it)."""
    word = unicodedata.normalize("NFKD", word.lower())
    return "".join(ch for ch in word if ch.isalnum())


def segment_like_reference(text: str, reference: Sequence[str], lang: str = "en",
                           tolerance: int = 4) -> list[tuple[int, int]] | None:
    """Cut ``text`` into ``len(reference)`` consecutive sentence spans that match ``reference``.

    ``reference`` are the per-recording sentences of the same passage in another form (e.g.
    Spoken-SQuAD's ASR transcript of each sentence recording, numbers spelled out, no
    punctuation). When the sentence splitter already yields the right number of sentences those
    are returned; otherwise the words of both sides are aligned (difflib) and each reference
    boundary is mapped into ``text``, snapped to the nearest punctuation boundary within
    ``tolerance`` words. Returns ``None`` when no consistent cut exists (the caller skips the
    paragraph and counts it).
    """
    n = len(reference)
    if n == 0:
        return None
    natural = split_sentences(text, lang)
    if len(natural) == n:
        return natural
    if n == 1:
        stripped = text.strip()
        start = text.find(stripped) if stripped else 0
        return [(start, start + len(stripped))] if stripped else None
    words = [(m.start(), _norm_word(m.group())) for m in _WORD.finditer(text)]
    ref_words: list[str] = []
    ref_bounds: list[int] = []  # index into ref_words where sentence k (k >= 1) starts
    for k, sent in enumerate(reference):
        if k:
            ref_bounds.append(len(ref_words))
        ref_words.extend(w for w in (_norm_word(t) for t in sent.split()) if w)
    if len(words) < n or not ref_words:
        return None
    matcher = difflib.SequenceMatcher(None, ref_words, [w for _, w in words], autojunk=False)
    anchors = [(a + i, b + i) for a, b, size in matcher.get_matching_blocks() for i in range(size)]
    if not anchors:
        return None
    ref_idx = [a for a, _ in anchors]

    def to_text_word(r: int) -> float:
        """Reference word index -> text word index, interpolated between matched anchors."""
        j = bisect.bisect_left(ref_idx, r)
        if j < len(anchors) and anchors[j][0] == r:
            return float(anchors[j][1])
        lo = anchors[j - 1] if j > 0 else (-1, -1)
        hi = anchors[j] if j < len(anchors) else (len(ref_words), len(words))
        if hi[0] == lo[0]:
            return float(hi[1])
        return lo[1] + (r - lo[0]) * (hi[1] - lo[1]) / (hi[0] - lo[0])

    word_starts = [s for s, _ in words]
    soft = sorted({bisect.bisect_left(word_starts, m.end()) for m in _EN_SOFT_END.finditer(text)}
                  | {bisect.bisect_left(word_starts, s) for s, _ in natural})
    cuts: list[int] = []
    for r in ref_bounds:
        j = int(round(to_text_word(r)))
        near = [c for c in soft if abs(c - j) <= tolerance]
        if near:
            j = min(near, key=lambda c: (abs(c - j), c))
        cuts.append(j)
    if any(b <= a for a, b in zip([0] + cuts, cuts + [len(words)])):
        return None
    char_cuts = [0] + [word_starts[c] for c in cuts] + [len(text)]
    spans = []
    for a, b in zip(char_cuts, char_cuts[1:]):
        seg = text[a:b]
        lead = len(seg) - len(seg.lstrip())
        trail = len(seg) - len(seg.rstrip())
        spans.append((a + lead, b - trail))
    return spans


# --------------------------------------------------------------------------- SQuAD layout


def load_json(path: str | os.PathLike) -> Any:
    """``json.load`` with one-line errors naming the file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: file not found")
    try:
        with open(path, encoding="utf-8-sig") as fin:
            return json.load(fin)
    except json.JSONDecodeError as exc:
        raise DataPrepError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
                            "a partial download?") from None
    except UnicodeDecodeError as exc:
        raise DataPrepError(f"{path}: not UTF-8 text ({exc.reason})") from None


def load_squad(path: str | os.PathLike) -> dict:
    """Read a SQuAD-layout JSON file and check its top level (``{"data": [...]}``)."""
    obj = load_json(path)
    if not isinstance(obj, dict) or not isinstance(obj.get("data"), list):
        raise SquadFormatError(f"{os.fspath(path)}: not SQuAD layout: expected an object with a 'data' list "
                               f"of articles, found {type(obj).__name__} with keys "
                               f"{sorted(obj)[:8] if isinstance(obj, dict) else '-'}")
    return obj


@dataclass
class QA:
    id: str
    question: str
    answer: str = ""
    answer_start: int = -1  # -1: the file gives no answer


@dataclass
class Paragraph:
    article_index: int
    paragraph_index: int
    title: str
    paragraph_id: str  # the file's own id (DRCD/ODSQA) or "<article>_<paragraph>"
    context: str
    qas: list[QA]


def _req(obj: Any, key: str, kind: type, where: str, source: str):
    if not isinstance(obj, dict) or key not in obj:
        raise SquadFormatError(f"{source}: {where}: missing '{key}'")
    value = obj[key]
    if not isinstance(value, kind):
        names = "/".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise SquadFormatError(f"{source}: {where}.{key}: expected {names}, found {type(value).__name__}")
    return value


def iter_paragraphs(squad: dict, source: str = "<squad>") -> list[Paragraph]:
    """Validated paragraphs of a SQuAD-layout object, in file order (article, paragraph)."""
    out = []
    for a, art in enumerate(_req(squad, "data", list, "top level", source)):
        title = str(art.get("title", "")) if isinstance(art, dict) else ""
        for p, par in enumerate(_req(art, "paragraphs", list, f"data[{a}]", source)):
            where = f"data[{a}].paragraphs[{p}]"
            context = _req(par, "context", str, where, source)
            qas = []
            for q, qa in enumerate(_req(par, "qas", list, where, source)):
                qwhere = f"{where}.qas[{q}]"
                question = _req(qa, "question", str, qwhere, source)
                qid = str(_req(qa, "id", (str, int), qwhere, source))
                answers = qa.get("answers") or []
                answer, start = "", -1
                if answers and isinstance(answers[0], dict):
                    answer = str(answers[0].get("text", ""))
                    start = int(answers[0].get("answer_start", -1))
                qas.append(QA(id=qid, question=question, answer=answer, answer_start=start))
            pid = str(par.get("id", f"{a}_{p}"))
            out.append(Paragraph(a, p, title, pid, context, qas))
    return out


def locate_answer(context: str, qa: QA) -> int:
    """Character offset of the answer: ``answer_start`` when it matches, else the first match, else -1."""
    if qa.answer and 0 <= qa.answer_start and context[qa.answer_start:qa.answer_start + len(qa.answer)] == qa.answer:
        return qa.answer_start
    return context.find(qa.answer) if qa.answer else -1


def answer_sentence_pairs(paragraphs: Iterable[Paragraph], lang: str):
    """Pair every question with the sentence of its paragraph that holds the answer.

    Returns ``(pairs, unplaced)``: pairs are ``(paragraph, sentence_index, (start, end), qa)`` in
    file order; ``unplaced`` are ``(paragraph, qa, reason)`` for questions whose answer is not in
    the text. The sentence is the retrieval unit of the paper's one-to-one sets (see the recipes'
    READMEs for the evidence).
    """
    pairs, unplaced = [], []
    for par in paragraphs:
        if not par.qas:
            continue
        spans = split_sentences(par.context, lang)
        if not spans:
            unplaced += [(par, qa, "empty context") for qa in par.qas]
            continue
        for qa in par.qas:
            pos = locate_answer(par.context, qa)
            if pos < 0:
                unplaced.append((par, qa, "answer text not found in the context"))
                continue
            k = sentence_index(spans, pos)
            pairs.append((par, k, spans[k], qa))
    return pairs, unplaced


@dataclass
class JoinedParagraph:
    """A SQuAD paragraph (written text, all questions) with its Spoken-SQuAD counterpart."""

    text: Paragraph          # from the SQuAD file: the words the TTS read
    asr_context: str         # Spoken-SQuAD: CMU Sphinx transcript of the recording
    asr_qas: list[QA]        # Spoken-SQuAD's questions (answers are spans of asr_context)


def join_spoken_squad(spoken: dict, squad: dict, spoken_src: str = "<spoken>",
                      squad_src: str = "<squad>") -> list[JoinedParagraph]:
    """Join Spoken-SQuAD's ASR transcripts to the SQuAD text by (article, paragraph) index.

    Spoken-SQuAD keeps SQuAD's article and paragraph order (its audio files are named
    ``<article>_<paragraph>_<sentence>.wav`` after that order) but drops questions whose answer
    did not survive ASR. The join checks titles, that every Spoken-SQuAD paragraph exists in
    the SQuAD file and that every Spoken-SQuAD
    question id exists in the same SQuAD paragraph, so that files from different splits or
    versions fail loudly instead of pairing the wrong text with the audio.
    """
    sp_pars = iter_paragraphs(spoken, spoken_src)
    sq_pars = iter_paragraphs(squad, squad_src)
    sq_index = {(p.article_index, p.paragraph_index): p for p in sq_pars}
    n_sp_art = len(spoken["data"])
    n_sq_art = len(squad["data"])
    if n_sp_art > n_sq_art:
        raise SquadFormatError(f"{spoken_src}: {n_sp_art} articles but {squad_src} has only {n_sq_art}: "
                               "are these the same split (spoken_train <-> train-v1.1, spoken_test <-> dev-v1.1)?")
    for a in range(n_sp_art):
        t_sp = str(spoken["data"][a].get("title", ""))
        t_sq = str(squad["data"][a].get("title", ""))
        if t_sp and t_sq and t_sp != t_sq:
            raise SquadFormatError(f"{spoken_src}: article {a} is '{t_sp}' but {squad_src} has '{t_sq}': "
                                   "the files do not belong together")
    out = []
    for sp in sp_pars:
        key = (sp.article_index, sp.paragraph_index)
        text = sq_index.get(key)
        if text is None:
            raise SquadFormatError(f"{spoken_src}: paragraph {key} has no counterpart in {squad_src}")
        known = {q.id for q in text.qas}
        stray = [q.id for q in sp.qas if q.id not in known]
        if stray:
            raise SquadFormatError(f"{spoken_src}: paragraph {key}: question id {stray[0]} is not in the same "
                                   f"paragraph of {squad_src}: the files do not belong together")
        out.append(JoinedParagraph(text=text, asr_context=sp.context, asr_qas=sp.qas))
    return out


# --------------------------------------------------------------------------- examples -> jsonl


@dataclass
class Example:
    """One question paired with one spoken context, before audio checks and filtering."""

    key: str
    context_id: str
    source: str                       # context audio (absolute path)
    target: str                       # context transcript (clean text)
    question: str                     # question text (written, or transcript of the spoken one)
    question_id: str
    question_source: str | None = None  # spoken question audio (absolute path)
    question_target: str | None = None  # its transcript
    extra: dict = field(default_factory=dict)  # dataset-specific fields kept in the jsonl


@dataclass
class SplitResult:
    split: str
    jsonl: Path
    pairs: Path | None
    stats: dict


class AudioProbe:
    """Reads audio headers once per path: ``frames(path)`` -> (10 ms frames, None) or (None, reason)."""

    def __init__(self):
        self._cache: dict[str, tuple[int | None, str | None]] = {}

    def frames(self, path: str) -> tuple[int | None, str | None]:
        if path in self._cache:
            return self._cache[path]
        from funasr_clsr.audio import audio_info  # soundfile header read, no decoding

        try:
            info = audio_info(path)
        except FileNotFoundError:
            result = (None, "missing")
        except (ValueError, OSError, RuntimeError) as exc:
            result = (None, "unreadable: " + " ".join(str(exc).split())[:200])
        else:
            n = int(info.frames * 100 // info.sample_rate) if info.sample_rate else 0
            result = (n, None) if n > 0 else (None, "empty (0 samples)")
        self._cache[path] = result
        return result

    def prefetch(self, paths: Iterable[str], nj: int = 4) -> None:
        """Read many headers with ``nj`` threads (helps on network file systems)."""
        todo = [p for p in dict.fromkeys(paths) if p not in self._cache]
        if nj <= 1 or len(todo) < 2:
            for p in todo:
                self.frames(p)
            return
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=nj) as pool:
            list(pool.map(self.frames, todo))


def one_to_one(examples: Iterable[Example], lang: str = "en",
               dedupe_text: bool = True) -> tuple[list[Example], list[tuple[Example, str]]]:
    """Keep one question per context: the first in input order (deterministic).

    With ``dedupe_text`` it also drops a context whose transcript is identical to an already
    kept one (and a question identical to a kept question), since identical texts are false
    in-batch negatives as well. Returns (kept, [(dropped example, reason), ...]).
    """
    kept, dropped = [], []
    seen_ctx: set[str] = set()
    seen_text: set[str] = set()
    seen_q: set[str] = set()

    def norm(s: str) -> str:
        s = clean_text(s).lower()
        return s.replace(" ", "") if lang == "zh" else s

    for ex in examples:
        if ex.context_id in seen_ctx:
            dropped.append((ex, "one_to_one: context already has a question"))
            continue
        t, q = norm(ex.target), norm(ex.question_target or ex.question)
        if dedupe_text and t in seen_text:
            dropped.append((ex, "one_to_one: identical context text kept under another id"))
            continue
        if dedupe_text and q in seen_q:
            dropped.append((ex, "one_to_one: identical question kept for another context"))
            continue
        seen_ctx.add(ex.context_id)
        seen_text.add(t)
        seen_q.add(q)
        kept.append(ex)
    return kept, dropped


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write via a temporary file in the same directory + rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fout:
            fout.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> int:
    """Atomically write one JSON object per line (UTF-8, not ASCII-escaped); returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    n = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fout:
            for rec in records:
                fout.write(json.dumps(rec, ensure_ascii=False) + "\n")
                n += 1
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return n


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a jsonl file with one-line errors naming file and line."""
    out = []
    with open(path, encoding="utf-8") as fin:
        for lineno, line in enumerate(fin, 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DataPrepError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
    return out


def write_pairs(path: str | os.PathLike, records: Iterable[dict]) -> int:
    """FlagEmbedding fine-tuning pairs from clean text: ``{"query", "pos": [context], "neg": []}``.

    The query is the written question, or the transcript of a spoken question.
    """
    seen = set()
    rows = []
    for rec in records:
        query = rec.get("question_target") or rec.get("question")
        pos = rec["target"]
        if not query or not pos or (query, pos) in seen:
            continue
        seen.add((query, pos))
        rows.append({"query": query, "pos": [pos], "neg": []})
    return write_jsonl(path, rows)


def _record(ex: Example, source_len: int, lang: str, q_len: int | None) -> dict:
    rec: dict[str, Any] = {
        "key": ex.key,
        "source": ex.source,
        "source_len": source_len,
        "target": ex.target,
        "target_len": target_length(ex.target, lang),
        "question": ex.question,
        "context_id": ex.context_id,
    }
    if ex.question_source is not None:
        rec["question_source"] = ex.question_source
        rec["question_source_len"] = q_len
        rec["question_target"] = ex.question_target or ex.question
        rec["question_target_len"] = target_length(rec["question_target"], lang)
    rec["question_id"] = ex.question_id
    rec["lang"] = lang
    for k, v in ex.extra.items():
        rec.setdefault(k, v)
    return rec


def finalize_split(examples: Sequence[Example], out_dir: str | os.PathLike, split: str, lang: str,
                   *, one_to_one_filter: bool = True, dedupe_text: bool = True, pairs: bool = True,
                   pre_skipped: Sequence[tuple[str, str, str]] = (),
                   max_skipped_frac: float | None = None,
                   probe: AudioProbe | None = None,
                   nj: int = 1,
                   progress: bool = True,
                   extra_stats: dict | None = None) -> SplitResult:
    """Check audio, filter one-to-one, and write ``<split>.jsonl`` (+ pairs, stats, skipped list).

    ``pre_skipped`` are (key, path, reason) rows the dataset reader already skipped (e.g. a
    paragraph whose sentence recordings are incomplete); they are reported with the rest.
    Missing or unreadable audio is listed in ``<split>.skipped.tsv`` and counted in
    ``<split>.stats.json``. Raises :class:`EmptySplitError` when nothing is left, and
    :class:`DataPrepError` when more than ``max_skipped_frac`` of the examples had to be skipped
    for missing/unreadable audio (after writing the skipped list, so the cause can be read).
    ``nj`` > 1 reads the audio headers with that many threads.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    probe = probe or AudioProbe()
    lang = lang.lower()
    if lang not in ("en", "zh"):
        raise DataPrepError(f"lang must be 'en' or 'zh', not {lang!r}")
    skipped: list[tuple[str, str, str]] = list(pre_skipped)
    reasons: Counter = Counter(r.split(":")[0] for _, _, r in skipped)
    usable: list[tuple[Example, int, int | None]] = []
    audio_skips = 0

    if nj > 1:
        probe.prefetch([ex.source for ex in examples]
                       + [ex.question_source for ex in examples if ex.question_source is not None], nj)
    iterator: Iterable[Example] = examples
    if progress and len(examples) > 2000:
        from tqdm import tqdm

        iterator = tqdm(examples, desc=f"{split}: audio headers", unit="pair", mininterval=5)
    for ex in iterator:
        n, why = probe.frames(ex.source)
        if n is None:
            skipped.append((ex.key, ex.source, f"context audio {why}"))
            reasons[f"context audio {why.split(':')[0]}"] += 1
            audio_skips += 1
            continue
        qn = None
        if ex.question_source is not None:
            qn, qwhy = probe.frames(ex.question_source)
            if qn is None:
                skipped.append((ex.key, ex.question_source, f"question audio {qwhy}"))
                reasons[f"question audio {qwhy.split(':')[0]}"] += 1
                audio_skips += 1
                continue
        usable.append((ex, n, qn))

    kept_ex = [u[0] for u in usable]
    frames = {id(u[0]): (u[1], u[2]) for u in usable}
    n_questions = len(kept_ex)
    if one_to_one_filter:
        kept_ex, dropped = one_to_one(kept_ex, lang, dedupe_text)
        for ex, why in dropped:
            skipped.append((ex.key, ex.source, why))
            reasons[why] += 1

    records = [_record(ex, frames[id(ex)][0], lang, frames[id(ex)][1]) for ex in kept_ex]

    skipped_path = out_dir / f"{split}.skipped.tsv"
    atomic_write_text(skipped_path, "".join(
        "\t".join(" ".join(str(c).split()) for c in row) + "\n" for row in [("key", "path", "reason")] + skipped))
    total = len(examples) + len(pre_skipped)
    stats = {
        "split": split,
        "lang": lang,
        "examples_read": total,
        "skipped_before_audio_check": len(pre_skipped),
        "skipped_audio": audio_skips,
        "questions_with_audio": n_questions,
        "one_to_one": one_to_one_filter,
        "written": len(records),
        "contexts": len({r["context_id"] for r in records}),
        "context_hours": round(sum(r["source_len"] for r in records) / 360000.0, 3),
        "skip_reasons": dict(sorted(reasons.items())),
        "skipped_list": str(skipped_path),
    }
    if extra_stats:
        stats.update(extra_stats)
    stats_path = out_dir / f"{split}.stats.json"
    atomic_write_text(stats_path, json.dumps(stats, indent=2, ensure_ascii=False) + "\n")

    if not records:
        first = "; ".join(f"{p} ({r})" for _, p, r in skipped[:3]) or "the input had no examples"
        raise EmptySplitError(f"split '{split}': no usable pairs out of {total} read "
                              f"({dict(reasons)}); e.g. {first}; full list: {skipped_path}")
    # filtering by design (one-to-one) is not a problem; missing audio or unusable rows are
    problems = audio_skips + sum(1 for row in pre_skipped if not row[2].startswith("one_to_one"))
    if max_skipped_frac is not None and total and problems / total > max_skipped_frac:
        raise DataPrepError(f"split '{split}': {problems} of {total} examples unusable "
                            f"(> {max_skipped_frac:.0%}); is the audio complete? see {skipped_path}")

    jsonl = out_dir / f"{split}.jsonl"
    write_jsonl(jsonl, records)
    pairs_path = None
    if pairs:
        pairs_path = out_dir / f"{split}.pairs.jsonl"
        write_pairs(pairs_path, records)
    return SplitResult(split=split, jsonl=jsonl, pairs=pairs_path, stats=stats)


def find_files(root: str | os.PathLike, suffixes: tuple[str, ...],
               match: Callable[[str], bool] | None = None) -> dict[str, str]:
    """Map file stem -> absolute path for every file under ``root`` with one of ``suffixes``.

    One walk of the tree (archives unpack into differently nested folders, so the layout under
    ``root`` is not assumed). A stem seen twice keeps the first path in sorted walk order.
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: audio directory not found")
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if name.lower().endswith(suffixes) and not name.startswith("."):
                stem = name.rsplit(".", 1)[0]
                if (match is None or match(stem)) and stem not in found:
                    found[stem] = os.path.abspath(os.path.join(dirpath, name))
    return found
