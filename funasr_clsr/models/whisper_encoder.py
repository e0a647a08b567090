"""Whisper's audio encoder as a FunASR encoder (``encoder: WhisperAudioEncoder``).

FunASR's ``OpenAIWhisperEncoderWarp`` downloads its weights by name and cuts input at 30 s. This
one builds transformers' ``WhisperEncoder`` from a local Whisper folder (e.g. the output of
``python -m funasr_clsr.bin.convert_whisper``) or, in an exported CLSR model, from the
architecture stored in ``config.yaml`` (weights then come from ``model.pt``).

* Batches of different lengths: each item is encoded on its own frames (keys past its end are
  masked), so a batch gives what each item would give alone.
* Longer than the positional range (1,500 outputs = 30 s): the input is cut into windows of
  ``window_frames`` mel frames, each encoded from position 0, and the outputs joined.
  ``max_windows`` bounds a single input (default 240 = 2 hours).
* ``input_layout``: ``"unpadded"`` (default) encodes each window on its own frames;
  ``"padded"`` pads every window to 30 s as Whisper was trained (5x the work for a 6 s clip).
* ``output_stride`` averages runs of output frames (2: 25 frames/s), which halves the work of
  everything after the encoder; the cache holds the unstrided frames.
* Frozen by default (``trainable_top_blocks`` trains the top N blocks and the final norm).
  The frozen part's outputs are cached per utterance when ``cache_dir`` (or the environment
  variable ``FUNASR_CLSR_ENCODER_CACHE``) is set: :class:`EncoderCache`.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from funasr.register import tables

ENV_CACHE = "FUNASR_CLSR_ENCODER_CACHE"
CACHE_FORMAT = 1
# bumped whenever this module computes the frozen part differently: old cache entries then never match
ENCODER_CODE_VERSION = 2
WHISPER_CONFIG_KEYS = ("d_model", "encoder_layers", "encoder_attention_heads", "encoder_ffn_dim",
                       "num_mel_bins", "max_source_positions", "activation_function")


class EncoderCacheError(RuntimeError):
    """A cache entry that cannot be trusted (corrupt, truncated, or written for other inputs)."""


class EncoderCache:
    """Outputs of a frozen encoder, one file per utterance, keyed by the weights and the input.

    The key is a blake2b digest of the frozen weights' fingerprint, the input layout and the exact
    feature matrix, so a changed model, frontend or audio never reads a stale entry. Each entry
    stores its key and a digest of its payload; an entry that fails either check (a torn write, a
    flipped byte, another key) is logged, recomputed and replaced. Writes go to a temporary file
    renamed into place, so a killed process leaves no half-written entry under a real name.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.hits = self.misses = self.rebuilt = 0

    def key(self, fingerprint: str, feats: torch.Tensor) -> str:
        h = hashlib.blake2b(digest_size=20)
        h.update(fingerprint.encode())
        h.update(str(tuple(feats.shape)).encode())
        h.update(feats.detach().to(torch.float32).contiguous().cpu().numpy().tobytes())
        return h.hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.pt"

    @staticmethod
    def _digest(t: torch.Tensor) -> str:
        return hashlib.blake2b(t.contiguous().numpy().tobytes(), digest_size=16).hexdigest()

    def get(self, key: str) -> torch.Tensor | None:
        path = self._path(key)
        if not path.is_file():
            self.misses += 1
            return None
        try:
            entry = torch.load(io.BytesIO(path.read_bytes()), map_location="cpu", weights_only=True)
            if not isinstance(entry, dict) or entry.get("format") != CACHE_FORMAT or entry.get("key") != key:
                raise EncoderCacheError("written for another input or by another version")
            hidden = entry["hidden"]
            if self._digest(hidden) != entry.get("digest"):
                raise EncoderCacheError("payload digest mismatch")
        except Exception as exc:  # torn, corrupt or foreign file: never used
            logging.warning("encoder cache: %s is unusable (%s); recomputing it", path, str(exc).splitlines()[0][:120])
            path.unlink(missing_ok=True)
            self.rebuilt += 1
            return None
        self.hits += 1
        return hidden

    def put(self, key: str, hidden: torch.Tensor) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # clone: a row sliced from a batch shares its storage, and torch.save writes a storage whole
        hidden = hidden.detach().to(torch.float32).cpu().clone()
        buf = io.BytesIO()
        torch.save({"format": CACHE_FORMAT, "key": key, "digest": self._digest(hidden), "hidden": hidden}, buf)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_bytes(buf.getvalue())
            tmp.replace(path)
        except OSError as exc:  # a full disk costs speed, never the run
            tmp.unlink(missing_ok=True)
            logging.warning("encoder cache: cannot write %s (%s); continuing without caching it", path, exc)


def _whisper_config(whisper_path: str | None, whisper_config: dict | None):
    from transformers import WhisperConfig

    if whisper_config:
        cfg = WhisperConfig(**dict(whisper_config))
    elif whisper_path:
        folder = Path(whisper_path)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(
                f"WhisperAudioEncoder: {folder} has no config.json (a transformers Whisper folder is expected; "
                "convert CTranslate2 weights with python -m funasr_clsr.bin.convert_whisper)")
        cfg = WhisperConfig.from_pretrained(str(folder))
        if getattr(cfg, "model_type", "whisper") != "whisper":
            raise ValueError(f"WhisperAudioEncoder: {folder} holds a {cfg.model_type} model, not Whisper")
    else:
        raise ValueError("WhisperAudioEncoder needs whisper_path (a transformers Whisper folder) or whisper_config")
    cfg._attn_implementation = "sdpa"
    return cfg


def _encoder_weights(folder: Path) -> dict:
    """The ``model.encoder.*`` tensors of a transformers Whisper folder (safetensors or bin)."""
    st = folder / "model.safetensors"
    if st.is_file():
        from safetensors.torch import load_file

        state = load_file(str(st))
    elif (folder / "pytorch_model.bin").is_file():
        state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise FileNotFoundError(f"WhisperAudioEncoder: {folder} has no model.safetensors or pytorch_model.bin")
    for prefix in ("model.encoder.", "encoder."):
        enc = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if enc:
            return enc
    raise ValueError(f"WhisperAudioEncoder: {folder} holds no encoder weights (model.encoder.*)")


def frozen_module_names(n_layers: int, trainable_top_blocks: int) -> list[str]:
    """The frozen part of a Whisper encoder, as submodule names of transformers' ``WhisperEncoder``:
    the conv stem, positions and all but the top blocks (the final norm trains with the top blocks)."""
    names = ["conv1", "conv2", "embed_positions"] + [f"layers.{i}" for i in range(n_layers - trainable_top_blocks)]
    return names + (["layer_norm"] if trainable_top_blocks == 0 else [])


@tables.register("encoder_classes", "WhisperAudioEncoder")
class WhisperAudioEncoder(nn.Module):
    def __init__(self, input_size: int = 80, whisper_path: str | None = None, whisper_config: dict | None = None,
                 freeze: bool = True, trainable_top_blocks: int = 0, input_layout: str = "unpadded",
                 window_frames: int | None = None, max_windows: int = 240, cache_dir: str | None = None,
                 load_weights: bool = True, output_stride: int = 1, **unused):
        super().__init__()
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        cfg = _whisper_config(whisper_path, whisper_config)
        if input_size != cfg.num_mel_bins:
            raise ValueError(f"WhisperAudioEncoder: the frontend gives {input_size} features, "
                             f"this Whisper expects {cfg.num_mel_bins} mel bins")
        if input_layout not in ("unpadded", "padded"):
            raise ValueError(f"input_layout must be 'unpadded' or 'padded', not {input_layout!r}")
        n_layers = cfg.encoder_layers
        if not 0 <= trainable_top_blocks <= n_layers:
            raise ValueError(f"trainable_top_blocks must be in [0, {n_layers}], got {trainable_top_blocks}")
        self.whisper = WhisperEncoder(cfg)
        if whisper_path and load_weights and not whisper_config:
            missing, unexpected = self.whisper.load_state_dict(_encoder_weights(Path(whisper_path)), strict=False)
            if missing:
                raise ValueError(f"WhisperAudioEncoder: {whisper_path} lacks encoder tensors {missing[:4]}")
        self.config_dict = {k: getattr(cfg, k) for k in WHISPER_CONFIG_KEYS}
        self.positions = cfg.max_source_positions  # encoder outputs per window
        full_window = 2 * self.positions  # mel frames per window (conv2 halves the rate)
        self.window_frames = int(window_frames or full_window)
        if not 2 <= self.window_frames <= full_window:
            raise ValueError(f"window_frames must be in [2, {full_window}], got {window_frames}")
        self.max_windows = max_windows
        if output_stride < 1:
            raise ValueError(f"output_stride must be >= 1, got {output_stride}")
        self.output_stride = int(output_stride)
        self.input_layout = input_layout
        self.freeze = freeze
        self.trainable_top_blocks = trainable_top_blocks if freeze else n_layers
        self.n_frozen_layers = n_layers - self.trainable_top_blocks
        self._cache_dir = cache_dir
        self._cache = None
        self._fingerprint = None
        self.whisper.embed_positions.requires_grad_(False)  # Whisper's positions are fixed sinusoids
        if freeze:
            for module in self._frozen_modules():
                module.requires_grad_(False)

    # ------------------------------------------------------------------ pieces
    def output_size(self) -> int:
        return self.config_dict["d_model"]

    def _frozen_modules(self) -> list[nn.Module]:
        return [self.whisper.get_submodule(name)
                for name in frozen_module_names(len(self.whisper.layers), self.trainable_top_blocks)]

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze:  # frozen blocks never see dropout
            for module in self._frozen_modules():
                module.eval()
        return self

    def _load_from_state_dict(self, *args, **kwargs):
        # weights loaded after construction (a release's trained top blocks under a frozen config, init_param)
        # change the frozen part: its cache key must be computed again, never reused from the weights built with
        self._fingerprint = None
        super()._load_from_state_dict(*args, **kwargs)

    @property
    def cache(self) -> EncoderCache | None:
        root = self._cache_dir or os.environ.get(ENV_CACHE)
        if not root or not self.freeze:
            return None
        if self._cache is None or self._cache.root != Path(root):
            self._cache = EncoderCache(root)
        return self._cache

    def fingerprint(self) -> str:
        """Digest of the frozen weights and the layout: part of every cache key."""
        if self._fingerprint is None:
            h = hashlib.blake2b(digest_size=16)
            h.update(f"v{ENCODER_CODE_VERSION}/{self.input_layout}/{self.window_frames}/{self.n_frozen_layers}".encode())
            for module in self._frozen_modules():
                for name, t in sorted(module.state_dict().items()):
                    h.update(name.encode())
                    h.update(t.detach().to(torch.float32).cpu().contiguous().numpy().tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    @staticmethod
    def out_length(frames: torch.Tensor) -> torch.Tensor:
        """Outputs for ``frames`` mel frames: conv2 has kernel 3, stride 2, padding 1."""
        return torch.div(frames - 1, 2, rounding_mode="floor") + 1

    def _windows(self, feats: torch.Tensor, lengths: torch.Tensor):
        """Cut each item into windows: (W, window_frames, D) padded, their lengths, owner item per window."""
        pieces, lens, owner = [], [], []
        for b in range(feats.size(0)):
            n = int(lengths[b])
            count = max(1, -(-n // self.window_frames))
            if count > self.max_windows:
                raise ValueError(f"input of {n / 100:.0f} s is longer than this encoder's limit of "
                                 f"{self.max_windows} windows of {self.window_frames / 100:.0f} s "
                                 "(raise encoder_conf.max_windows or split the recording)")
            for w in range(count):
                piece = feats[b, w * self.window_frames: min(n, (w + 1) * self.window_frames)]
                pieces.append(piece)
                lens.append(piece.size(0))
                owner.append(b)
        return pieces, torch.tensor(lens), owner

    def _bottom(self, x: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        """conv stem + positions + the frozen blocks for windows (W, T, D) -> (W, T', H)."""
        w = self.whisper
        if self.input_layout == "padded":
            # Whisper's own input: the window zero-padded to 30 s, whose log-mel past the audio is the
            # floor of the utterance's dynamic range, i.e. its smallest feature value
            full = 2 * self.positions
            valid = torch.arange(x.size(1), device=x.device)[None, :] < lens.to(x.device)[:, None]
            floor = x.masked_fill(~valid[:, :, None], float("inf")).amin(dim=(1, 2))
            floor = torch.where(torch.isfinite(floor), floor, torch.full_like(floor, -1.5))
            x = torch.cat([x, x.new_zeros(x.size(0), full - x.size(1), x.size(2))], dim=1)
            x = torch.where(torch.arange(full, device=x.device)[None, :, None] < lens.to(x.device)[:, None, None],
                            x, floor[:, None, None])
        h = F.gelu(w.conv1(x.transpose(1, 2)))
        if self.input_layout == "unpadded" and bool((lens < h.size(2)).any()):
            # conv2 must see zeros past each item's end, as it does at the edge of an item alone
            keep = torch.arange(h.size(2), device=h.device)[None, :] < lens.to(h.device)[:, None]
            h = h * keep[:, None, :].to(h.dtype)
        h = F.gelu(w.conv2(h)).transpose(1, 2)
        h = h + w.embed_positions.weight[: h.size(1)]
        mask = self._mask(lens, h.size(1), h.dtype) if self.input_layout == "unpadded" else None
        for layer in w.layers[: self.n_frozen_layers]:
            h = layer(h, attention_mask=mask, layer_head_mask=None)[0]
        if self.trainable_top_blocks == 0:
            h = w.layer_norm(h)
        return h

    def _top(self, h: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        w = self.whisper
        if self.trainable_top_blocks == 0:
            return h
        mask = self._mask(lens, h.size(1), h.dtype) if self.input_layout == "unpadded" else None
        for layer in w.layers[self.n_frozen_layers:]:
            h = layer(h, attention_mask=mask, layer_head_mask=None)[0]
        return w.layer_norm(h)

    def _mask(self, lens: torch.Tensor, width: int, dtype) -> torch.Tensor | None:
        out = self.out_length(lens).to(self.whisper.conv1.weight.device)
        if bool((out >= width).all()):
            return None
        keep = torch.arange(width, device=out.device)[None, :] < out[:, None]
        return torch.zeros(keep.shape, dtype=dtype, device=out.device).masked_fill(~keep, torch.finfo(dtype).min)[:, None, None, :]

    def _encode_windows(self, pieces: list[torch.Tensor], lens: torch.Tensor) -> list[torch.Tensor]:
        """Frozen-part outputs per window (from the cache where possible), each (T'_w, H)."""
        cache = self.cache
        out: list[torch.Tensor | None] = [None] * len(pieces)
        keys = [None] * len(pieces)
        if cache is not None:
            fp = self.fingerprint()
            for i, p in enumerate(pieces):
                keys[i] = cache.key(fp, p)
                out[i] = cache.get(keys[i])
        for i, p in enumerate(pieces):
            if out[i] is None and p.size(0) == 0:
                out[i] = p.new_zeros(0, self.output_size())
        todo = [i for i, o in enumerate(out) if o is None]
        # Full windows and the rest go through the encoder apart: a recording's 40 s windows are a
        # full 30 s window and a 10 s remainder each, and padding the remainders to 30 s cost a third
        # more frames and a padding mask on every full window (docs/benchmarks.md, "Window groups").
        full = [i for i in todo if pieces[i].size(0) == self.window_frames]
        rest = [i for i in todo if pieces[i].size(0) != self.window_frames]
        for group in (full, rest):
            if not group:
                continue
            batch = nn.utils.rnn.pad_sequence([pieces[i] for i in group], batch_first=True)
            group_lens = lens[group]
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
                h = self._bottom(batch, group_lens)
            n_out = self.out_length(group_lens)
            for j, i in enumerate(group):
                out[i] = h[j, : int(n_out[j])]
                if cache is not None:
                    cache.put(keys[i], out[i])
        return [o.to(pieces[0].device) for o in out]

    def _stride(self, h: torch.Tensor) -> torch.Tensor:
        """Mean over each run of ``output_stride`` frames (the last run may be shorter): fewer frames for
        the CIF predictor, CTC head and decoder, whose cost grows with them (50/s -> 25/s at 2)."""
        k = self.output_stride
        if k == 1 or h.size(0) == 0:
            return h
        n = -(-h.size(0) // k)
        pad = n * k - h.size(0)
        summed = F.pad(h, (0, 0, 0, pad)).reshape(n, k, -1).sum(1)
        counts = torch.full((n, 1), float(k), dtype=h.dtype, device=h.device)
        counts[-1] = k - pad
        return summed / counts

    # ------------------------------------------------------------------ forward
    def forward(self, xs_pad: torch.Tensor, ilens: torch.Tensor, prev_states=None):
        """(B, T, n_mels) log-mel, (B,) frames -> (B, T', d_model), (B,) outputs, None."""
        ilens = ilens.to(torch.long).cpu()
        pieces, lens, owner = self._windows(xs_pad, ilens)
        hidden = self._encode_windows(pieces, lens)
        if self.trainable_top_blocks:
            padded = nn.utils.rnn.pad_sequence(hidden, batch_first=True)
            top = self._top(padded, lens)
            hidden = [top[i, : h.size(0)] for i, h in enumerate(hidden)]
        per_item: list[list[torch.Tensor]] = [[] for _ in range(xs_pad.size(0))]
        for h, b in zip(hidden, owner):
            per_item[b].append(h)
        joined = [self._stride(torch.cat(parts, dim=0)) for parts in per_item]
        olens = torch.tensor([j.size(0) for j in joined], device=xs_pad.device)
        return nn.utils.rnn.pad_sequence(joined, batch_first=True), olens, None
