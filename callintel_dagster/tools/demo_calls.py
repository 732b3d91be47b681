"""Scripted demo calls (two voices, three with a transfer), synthesized here, with exact ground truth.

The one real call we may ship (the pyannote sample) is a single scenario with no compliance labels.
The scenarios a QA team cares about — a billing dispute, PHI read out before the caller is verified,
a missing recording disclosure, an escalation, an angry caller, dead air, a corrupt upload — are
written as scripts in ``demo_scripts/*.yaml`` and spoken by the TTS engines Debian ships (espeak-ng,
flite), so every word, speaker turn and timestamp is known exactly. That makes the demo meaningful
and lets ``make bench`` score ASR, diarization and the compliance flags against real answers.

Each call ``<blob_root>/<date>/<agent_id>__<name>.wav`` gets a sidecar ``<agent_id>__<name>.truth.json``
(not an audio extension, so the blob store never lists it) holding the turns, the expected flags and
the PHI strings spoken. Agents keep one voice across calls, as a real agent does; customers get an
espeak-ng voice, so the two sides of a call never share a voice. The mix goes through a telephone
channel (300–3400 Hz, 8 kHz) and is stored either as 16 kHz PCM or as 8 kHz µ-law, the two forms
call-centre recordings usually take.

A script's ``layout`` picks the channels: ``mono`` (default), ``split_stereo`` (agent on the
``agent_channel``, default left, the caller on the other, each through its own line; ``bleed_db``
adds the other party's echo at that level) or ``mono_in_stereo`` (the mono mix copied to both
channels, each with its own hiss, the right one offset by ``copy_gain_db``: -80 leaves it hiss
only), the two-channel forms recorders write.

Generation is deterministic and idempotent: a call is re-synthesized only when its script, date,
voices or :data:`GENERATOR_VERSION` change, which the sidecar records as ``script_sha256``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import tempfile
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from callintel_dagster.engines.channels import CHANNEL_NAMES
from callintel_dagster.engines.ingest import AGENT_SEPARATOR, call_id_for
from callintel_dagster.engines.vocabulary import MONO, MONO_IN_STEREO, SPLIT_STEREO

SCRIPTS_DIR = Path(__file__).with_name("demo_scripts")
# The days `make demo` fills; a script's ``day`` indexes into them.
DEMO_DATES = ["2026-11-20", "2026-11-21", "2026-11-22"]
TRUTH_SUFFIX = ".truth.json"
# Bump when synthesis or the sidecar layout changes: every call is regenerated on the next run.
GENERATOR_VERSION = 1
MIX_RATE = 16_000
DEFAULT_GAP_S = 0.5  # pause between turns; a script's negative gap_s is an overlap
# Speech peaks per delivery. "loud" is also driven into soft saturation: shouting is compressed and
# dense, not just scaled up, and that is what an acoustic tone model hears.
LEVEL_PEAK = {"quiet": 0.08, "normal": 0.35, "loud": 0.95}
LOUD_DRIVE = 3.0
LINE_NOISE_STD = 0.002  # hiss of a phone line, about -54 dBFS; keeps "silence" from being digital zero
TRIM_THRESHOLD = 0.02  # of a turn's peak: TTS pads each utterance with silence that is not speech
AGENT_VOICES = {
    "agent-ana": "flite:slt",
    "agent-bo": "flite:rms",
    "agent-cy": "flite:awb",
    "agent-dee": "flite:kal16",
    # Spanish agents (the Spanish evaluation corpus): espeak-ng's Spain and Latin American voices, in
    # variants no corpus customer uses.
    "agente-lucia": "espeak-ng:es+f1",
    "agente-mateo": "espeak-ng:es-419+m1",
}
# Who may speak a script line. An ``other_agent`` (a supervisor the call is transferred to) needs the
# script's ``other_agent: {id, voice}``; a script's ``agent_voice`` replaces the agent's own voice (a
# call where someone else takes the agent's seat).
SCRIPT_ROLES = ("agent", "customer", "other_agent")
# Stored encodings: (sample rate, libsndfile subtype, name in the sidecar).
CHANNELS = {"pcm16k": (16_000, "PCM_16", "pcm_s16le"), "ulaw8k": (8_000, "ULAW", "pcm_mulaw")}
# Flags a script states; ``None`` means the call does not clearly decide it, and it is not scored.
BOOL_FLAGS = (
    "billing_detected",
    "phi_before_verification",
    "phi_requested_unnecessarily",
    "missing_recording_disclosure",
    "issue_resolved",
    "escalation_requested",
    "angry_caller",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TruthTurn(_Strict):
    turn_index: int = Field(ge=0)
    role: Literal["agent", "customer", "other_agent"]
    speaker: str
    start_s: float = Field(ge=0)
    end_s: float
    text: str = Field(min_length=1)

    @model_validator(mode="after")
    def _ordered(self) -> TruthTurn:
        if self.end_s <= self.start_s:
            raise ValueError(f"turn {self.turn_index} ends before it starts")
        return self


class ExpectedFlags(_Strict):
    billing_detected: bool | None
    phi_before_verification: bool | None
    phi_requested_unnecessarily: bool | None
    missing_recording_disclosure: bool | None
    issue_resolved: bool | None
    escalation_requested: bool | None
    overall_sentiment: Literal["positive", "neutral", "negative"] | None
    angry_caller: bool | None


class SpokenPhi(_Strict):
    kind: str
    text: str = Field(min_length=1)


class CallTruth(_Strict):
    """The sidecar contract. A corrupt call has no turns, flags or PHI, and ``decodable`` false."""

    generator_version: int
    script_sha256: str
    call_name: str
    scenario: str
    agent_id: str
    call_date: str
    blob_key: str
    call_id: str
    audio_file: str
    decodable: bool
    encoding: str | None
    sample_rate: int | None
    duration_s: float | None
    turns: list[TruthTurn]
    expected: ExpectedFlags | None
    phi: list[SpokenPhi]
    channel_layout: Literal["mono", "split_stereo", "mono_in_stereo"] = MONO
    agent_channel: Literal["left", "right"] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> CallTruth:
        if self.decodable != (self.expected is not None):
            raise ValueError("a decodable call needs expected flags, a corrupt one has none")
        if self.turns and self.duration_s is not None and self.turns[-1].end_s > self.duration_s:
            raise ValueError("a turn ends after the recording")
        spoken = " ".join(turn.text for turn in self.turns)
        if missing := [p.text for p in self.phi if p.text not in spoken]:
            raise ValueError(f"PHI listed but never spoken: {missing}")
        return self


@dataclasses.dataclass(frozen=True)
class Voice:
    """``engine:name`` plus espeak-ng's rate (words/min) and pitch (0–99); flite voices take neither."""

    spec: str
    rate: int | None = None
    pitch: int | None = None

    def synthesize(self, text: str, workdir: Path) -> np.ndarray:
        """Speak ``text``; returns mono float32 at :data:`MIX_RATE`, trimmed to the speech itself."""
        engine, name = self.spec.split(":", 1)
        raw, resampled = workdir / "tts.wav", workdir / "tts16k.wav"
        if engine == "flite":
            if self.rate or self.pitch:
                raise ValueError(f"{self.spec}: rate/pitch are only supported for espeak-ng voices")
            command = ["flite", "-voice", name, "-t", text, "-o", str(raw)]
        elif engine == "espeak-ng":
            command = ["espeak-ng", "-v", name, "-w", str(raw), *(["-s", str(self.rate)] if self.rate else []),
                       *(["-p", str(self.pitch)] if self.pitch else []), "--", text]
        else:
            raise ValueError(f"unknown TTS engine in voice {self.spec!r}")
        subprocess.run(command, check=True, capture_output=True)
        _sox(raw, resampled, "rate", str(MIX_RATE))
        audio, _ = soundfile.read(resampled, dtype="float32")
        loud = np.flatnonzero(np.abs(audio) > TRIM_THRESHOLD * np.abs(audio).max())
        return audio[loud[0]:loud[-1] + 1]


@dataclasses.dataclass(frozen=True)
class DemoScript:
    name: str
    body: dict

    @property
    def agent_id(self) -> str:
        return self.body["agent_id"]

    def call_date(self, dates: list[str]) -> str:
        return dates[self.body["day"] % len(dates)]

    def audio_path(self, blob_root: Path, dates: list[str]) -> Path:
        return blob_root / self.call_date(dates) / f"{self.agent_id}{AGENT_SEPARATOR}{self.name}.wav"

    def transcript(self) -> list[dict]:
        """The turns as written (``turn_index``, ``role``, ``text``): what a perfect ASR would give."""
        return [{"turn_index": index, "role": role, "text": line[role]}
                for index, line in enumerate(self.body.get("turns", []))
                for role in SCRIPT_ROLES if role in line]

    def sha256(self, call_date: str) -> str:
        """What the audio depends on; the agent voice lives in code, so it is hashed explicitly."""
        identity = {"script": self.body, "call_date": call_date, "generator": GENERATOR_VERSION,
                    "agent_voice": AGENT_VOICES.get(self.agent_id)}
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def with_layout(script: DemoScript, layout: str, tag: str | None = None, **options) -> DemoScript:
    """``script`` recorded as ``layout`` on an 8 kHz µ-law line (``options``: ``agent_channel``,
    ``bleed_db``, ``copy_gain_db``); its name gains ``-<tag or layout>`` so both versions can coexist."""
    return DemoScript(f"{script.name}-{tag or layout.replace('_', '-')}",
                      {**script.body, "channel": "ulaw8k", "layout": layout, **options})


def load_scripts() -> list[DemoScript]:
    """Every script in :data:`SCRIPTS_DIR`, by name; the file name (minus ``.yaml``) is the call name."""
    return [DemoScript(path.stem, yaml.safe_load(path.read_text()))
            for path in sorted(SCRIPTS_DIR.glob("*.yaml"))]


def write_demo_calls(blob_root: Path, dates: list[str] | None = None,
                     names: Collection[str] | None = None,
                     scripts: list[DemoScript] | None = None) -> list[Path]:
    """Synthesize the demo calls (skipping ones already current) and return their audio paths.

    ``dates`` defaults to :data:`DEMO_DATES`; a script's ``day`` indexes into it. ``names`` limits
    the run to those scripts (fast tests, or re-listening to one script while editing it).
    ``scripts`` replaces the demo scripts (the evaluation corpus of ``tools/compliance_eval``).
    """
    if dates is None:
        dates = DEMO_DATES
    written = []
    with tempfile.TemporaryDirectory(prefix="callintel-demo-") as workdir:
        for script in load_scripts() if scripts is None else scripts:
            if names is not None and script.name not in names:
                continue
            target = script.audio_path(Path(blob_root), dates)
            call_date = script.call_date(dates)
            digest = script.sha256(call_date)
            if not _is_current(target, digest):
                target.parent.mkdir(parents=True, exist_ok=True)
                seed = int(digest[:16], 16)
                truth = _write_corrupt(target, seed) if script.body.get("corrupt") else \
                    _write_call(script, target, Path(workdir), seed)
                truth.update(_identity(script, target, call_date, digest))
                _atomic_write(target.with_suffix(TRUTH_SUFFIX),
                              json.dumps(CallTruth.model_validate(truth).model_dump(), indent=2).encode())
            written.append(target)
    return written


def load_truth(audio_path: Path) -> dict:
    """The ground truth of one demo call, from the sidecar next to its audio."""
    return json.loads(Path(audio_path).with_suffix(TRUTH_SUFFIX).read_text())


def iter_truth(blob_root: Path) -> Iterator[tuple[Path, dict]]:
    """``(audio path, truth)`` for every demo call under ``blob_root``, in date then name order."""
    for sidecar in sorted(Path(blob_root).glob(f"*/*{TRUTH_SUFFIX}")):
        truth = json.loads(sidecar.read_text())
        yield sidecar.parent / truth["audio_file"], truth


def flag_scores(predicted: Mapping[str, Mapping[str, bool | None]],
                truth: Mapping[str, Mapping]) -> dict[str, dict]:
    """Per-flag precision, recall and F1 of ``predicted`` against ``truth``.

    Both map the same call key (call name, blob key or call id) to flags; a truth value may be a whole
    sidecar or just its ``expected`` mapping. Calls whose truth is ``None`` for a flag are not scored
    on it. A missing or ``None`` prediction counts as "not flagged": a pipeline that cannot decide
    has not caught the issue. Undefined ratios (nothing flagged, nothing to find) are ``None``.
    """
    counts = {flag: dict.fromkeys(("tp", "fp", "fn", "tn"), 0) for flag in BOOL_FLAGS}
    for key, record in truth.items():
        expected = record.get("expected", record) or {}
        guess = predicted.get(key, {})
        for flag in BOOL_FLAGS:
            if expected.get(flag) is None:
                continue
            flagged = bool(guess.get(flag))
            if flagged:
                counts[flag]["tp" if expected[flag] else "fp"] += 1
            else:
                counts[flag]["fn" if expected[flag] else "tn"] += 1
    scores = {}
    for flag, c in counts.items():
        if not any(c.values()):
            continue
        precision = c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else None
        recall = c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else None
        f1 = (2 * precision * recall / (precision + recall) if precision and recall else
              0.0 if precision is not None and recall is not None else None)
        scores[flag] = {"precision": precision, "recall": recall, "f1": f1,
                        "support": c["tp"] + c["fn"], **c}
    return scores


# --- synthesis --------------------------------------------------------------------------------------

def _is_current(target: Path, digest: str) -> bool:
    sidecar = target.with_suffix(TRUTH_SUFFIX)
    if not (target.exists() and sidecar.exists()):
        return False
    try:
        return json.loads(sidecar.read_text()).get("script_sha256") == digest
    except json.JSONDecodeError:
        return False


def _identity(script: DemoScript, target: Path, call_date: str, digest: str) -> dict:
    blob_key = f"{call_date}/{target.name}"
    return {"generator_version": GENERATOR_VERSION, "script_sha256": digest, "call_name": script.name,
            "scenario": script.body["scenario"].strip(), "agent_id": script.agent_id,
            "call_date": call_date, "blob_key": blob_key, "call_id": call_id_for(blob_key),
            "audio_file": target.name}


def _write_call(script: DemoScript, target: Path, workdir: Path, seed: int) -> dict:
    """Place each turn after the previous one ends (plus its gap), mix, and send it down the line."""
    body = script.body
    customer = body["customer"]
    voices = {"agent": Voice(body.get("agent_voice", AGENT_VOICES[script.agent_id])),
              "customer": Voice(customer["voice"], customer.get("rate"), customer.get("pitch"))}
    levels = {"agent": "normal", "customer": customer.get("level", "normal"), "other_agent": "normal"}
    speakers = {"agent": script.agent_id, "customer": "customer"}
    if other := body.get("other_agent"):
        voices["other_agent"] = Voice(other["voice"], other.get("rate"), other.get("pitch"))
        speakers["other_agent"] = other["id"]
    placed, turns = [], []
    end = round(float(body.get("lead_in_s", 0.6)) * MIX_RATE)  # sample where the conversation so far ends
    for turn, line in zip(script.transcript(), body["turns"], strict=True):
        role = turn["role"]
        gap = float(line.get("gap_s", DEFAULT_GAP_S)) if turn["turn_index"] else 0.0
        speech = _at_level(voices[role].synthesize(line.get("say", turn["text"]), workdir), levels[role])
        start = end + round(gap * MIX_RATE)
        placed.append((start, speech, role))
        turns.append({**turn, "speaker": speakers[role],
                      "start_s": round(start / MIX_RATE, 3), "end_s": round((start + speech.size) / MIX_RATE, 3)})
        end = max(end, start + speech.size)
    tail = round(float(body.get("tail_s", 0.8)) * MIX_RATE)
    rate, subtype, encoding = CHANNELS[body["channel"]]
    layout = body.get("layout", MONO)
    if layout == SPLIT_STEREO:
        line_audio = _split_channels(placed, end + tail, body, rate, workdir, seed)
    else:
        mix = np.random.default_rng(seed).normal(0.0, LINE_NOISE_STD, end + tail)
        for start, speech, _role in placed:
            mix[start:start + speech.size] += speech
        line_audio = _telephone_line(mix.astype(np.float32), rate, workdir)
        if layout == MONO_IN_STEREO:
            # Two converters digitize the copies: each channel gets its own hiss on top.
            copies = np.stack([line_audio, line_audio * 10 ** (float(body.get("copy_gain_db", 0.0)) / 20)], axis=1)
            hiss = np.random.default_rng(seed + 1).normal(0.0, LINE_NOISE_STD, copies.shape)
            line_audio = (copies + hiss).astype(np.float32)
        elif layout != MONO:
            raise ValueError(f"{script.name}: unknown layout {layout!r}")
    partial = target.with_name(f".{target.name}.partial")
    soundfile.write(partial, np.clip(line_audio, -1.0, 1.0), rate, subtype=subtype, format="WAV")
    os.replace(partial, target)
    stereo = {"channel_layout": layout,
              "agent_channel": body.get("agent_channel", CHANNEL_NAMES[0]) if layout == SPLIT_STEREO else None}
    return {"decodable": True, "encoding": encoding, "sample_rate": rate,
            "duration_s": round(line_audio.shape[0] / rate, 3), "turns": turns,
            "expected": body["expected"], "phi": body["phi"], **stereo}


def _split_channels(placed: list[tuple[int, np.ndarray, str]], length: int, body: dict, rate: int,
                    workdir: Path, seed: int) -> np.ndarray:
    """(samples, 2): each party on its own line (own hiss), the agent on ``agent_channel``; with
    ``bleed_db`` each channel also carries the other party at that level, as a handset echo does."""
    rng = np.random.default_rng(seed)
    tracks = {role: np.zeros(length) for role in ("agent", "customer")}
    for start, speech, role in placed:
        # A supervisor the call is transferred to speaks on the agent side of the recorder.
        tracks["customer" if role == "customer" else "agent"][start:start + speech.size] += speech
    bleed = 10 ** (float(body["bleed_db"]) / 20) if body.get("bleed_db") is not None else 0.0
    lines = {
        role: _telephone_line(
            (tracks[role] + bleed * tracks[other] + rng.normal(0.0, LINE_NOISE_STD, length)).astype(np.float32),
            rate, workdir)
        for role, other in (("agent", "customer"), ("customer", "agent"))
    }
    agent_channel = body.get("agent_channel", CHANNEL_NAMES[0])
    order = ("agent", "customer") if agent_channel == CHANNEL_NAMES[0] else ("customer", "agent")
    return np.stack([lines[role] for role in order], axis=1)


def _at_level(speech: np.ndarray, level: str) -> np.ndarray:
    speech = speech / np.abs(speech).max()
    if level == "loud":
        speech = np.tanh(LOUD_DRIVE * speech) / np.tanh(LOUD_DRIVE)
    return (LEVEL_PEAK[level] * speech).astype(np.float32)


def _telephone_line(mix: np.ndarray, rate: int, workdir: Path) -> np.ndarray:
    """Band-limit to the 300–3400 Hz voice channel through 8 kHz, then store at ``rate``."""
    clean, line = workdir / "mix.wav", workdir / "line.wav"
    soundfile.write(clean, mix, MIX_RATE, subtype="FLOAT")
    _sox(clean, line, "sinc", "300-3400", "rate", "8000", *(["rate", str(rate)] if rate != 8000 else []))
    audio, _ = soundfile.read(line, dtype="float32")
    return audio


def _sox(source: Path, target: Path, *effects: str) -> None:
    """Float output, no dither (-D) and repeatable mode (-R): the same input gives the same bytes."""
    subprocess.run(["sox", "-D", "-R", str(source), "-e", "floating-point", "-b", "32", str(target), *effects],
                   check=True, capture_output=True)


def _write_corrupt(target: Path, seed: int) -> dict:
    """A RIFF/WAVE header over seeded random bytes: looks like a WAV upload, decodes as nothing."""
    payload = np.random.default_rng(seed).bytes(48_000)
    _atomic_write(target, b"RIFF" + (len(payload) + 4).to_bytes(4, "little") + b"WAVE" + payload)
    return {"decodable": False, "encoding": None, "sample_rate": None, "duration_s": None,
            "turns": [], "expected": None, "phi": []}


def _atomic_write(path: Path, data: bytes) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)
