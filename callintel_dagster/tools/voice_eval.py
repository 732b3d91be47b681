"""Voice evaluation calls: three-voice transfers (speaker count) and enrolled agents (voiceprints).

Two seeded sets of calls, written as demo-script bodies so the demo generator
(:mod:`~callintel_dagster.tools.demo_calls`: espeak-ng / flite voices, telephone line, truth sidecars)
synthesizes them unchanged:

- **Count calls** (:func:`count_scripts`): an agent, a caller and, in most calls, a supervisor the
  call is transferred to (three voices); the rest stay two-voice, so an estimator that always says
  three is caught. The split is by seed: thresholds are chosen on the ``dev`` seeds only, the
  ``test`` seeds are scored by ``make bench``.
- **Enrolment calls** (:func:`enrolment_scripts`): :data:`ENROLLED_AGENTS` each take calls on
  :data:`ENROLMENT_DATES`; the first two dates build the voiceprints, the later ones are scored. On
  the later dates the caller often speaks first and the agents use no scripted greeting, which is
  exactly where the first-speaker / agent-phrase rule guesses wrong. One later call is answered by a
  voice that is not the agent's (:data:`IMPOSTOR_VOICE`): the voice-mismatch list must catch it.
  Two parts with seeds of their own (:data:`ENROLMENT_SEEDS`): role thresholds are tuned on ``dev``
  (more later calls, so a single call weighs less); ``make bench`` scores ``test``.

The lines are everyday call-centre wording composed from small pools; they were written without
looking at the phrase list of ``engines/align.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from callintel_dagster.engines.align import assign_roles
from callintel_dagster.engines.audio import decode_audio, sha256_of
from callintel_dagster.engines.diarize import DiarizationConfig, diarize
from callintel_dagster.engines.transcripts import TranscriptTask
from callintel_dagster.engines.voiceprints import build_voiceprints
from callintel_dagster.tools.demo_calls import AGENT_VOICES, DemoScript, load_truth, write_demo_calls
from callintel_dagster.tools.report_format import fmt

COUNT_DEV_SEEDS = range(0, 40)
COUNT_TEST_SEEDS = range(100, 124)
THREE_VOICE_SHARE = 0.7
COUNT_DATE = "2026-12-01"
ENROLLED_AGENTS = ("agent-ana", "agent-bo", "agent-cy")
ENROLMENT_DATES = ["2026-12-07", "2026-12-08", "2026-12-09", "2026-12-10"]
# Calls per agent and date, per part: two enrolment calls, then the scored ones.
CALLS_PER_DATE = {"test": (1, 1, 2, 1), "dev": (1, 1, 3, 3)}
ENROLMENT_SEEDS = {"test": 7, "dev": 8}
IMPOSTOR_AGENT = "agent-ana"
IMPOSTOR_VOICE = "flite:kal16"
IMPOSTOR_CALL = "enrol-agent-ana-impostor"
# Voices for the other agent of a transfer (never the call's own agent voice).
SUPERVISOR_VOICES = ("flite:slt", "flite:rms", "flite:awb", "flite:kal16")
CUSTOMER_VOICES = (
    "espeak-ng:en-us+m3", "espeak-ng:en-us+f2", "espeak-ng:en-us+m5", "espeak-ng:en-gb+f4",
    "espeak-ng:en-us+f4", "espeak-ng:en-gb+m3", "espeak-ng:en-us-nyc+m1", "espeak-ng:en-us+f5",
)
AGENT_NAMES = {"agent-ana": "Ana", "agent-bo": "Bo", "agent-cy": "Cy", "agent-dee": "Dee"}
SUPERVISOR_NAMES = ("Maria", "Tom", "Priya", "Grant")

_GREETINGS = (
    "Good morning, you've reached Lakeside Health member services, this is {name}.",
    "Hello, Northgate Clinic scheduling desk, {name} speaking.",
    "Hi there, you're through to the Brookfield pharmacy line, {name} here.",
    "Good afternoon, Summit Care billing office, you're speaking with {name}.",
)
_CALLER_FIRST = (
    "Hello? Is this the right number for the billing office?",
    "Hi, hello, am I through to the clinic? I've been on hold for ages.",
    "Hello, yes, I'm calling about a letter I got in the post yesterday.",
)
_ANSWERS = (
    "Yes, you're in the right place. Tell me what's going on.",
    "You are, sorry about the wait. What's the problem?",
    "Sure, go ahead, I'm listening.",
)
_ISSUES = (
    "I got a letter saying my prescription is no longer covered and I don't understand why.",
    "I need to move my appointment next Tuesday because I have to work that morning.",
    "There's a charge on my statement for a visit I never had.",
    "My referral to the cardiologist still hasn't gone through after three weeks.",
    "I was told my test results would be ready yesterday, but nobody has called me.",
    "I'd like to know whether physical therapy is included in my plan this year.",
)
_FOLLOW_UPS = (
    "Sure, let me pull up the account. Could you spell your last name for me?",
    "Okay, give me one moment while I look at the records.",
    "I see. Which clinic did you visit last time?",
    "Alright, and roughly when did this start?",
)
_DETAILS = (
    "It's Miller, M I L L E R.",
    "It was the downtown office, about two weeks ago.",
    "Sometime in early March, I think.",
    "The main site on Oak Street, near the station.",
)
_RESOLUTIONS = (
    "Thanks. I found the problem and corrected it, so you'll get an updated letter this week.",
    "Okay, I've moved you to Thursday at ten in the morning instead.",
    "I've sent the referral again and marked it urgent, the office should contact you within two days.",
    "That's covered, up to twenty sessions a year, and I've emailed you the details.",
)
_TRANSFERS = (
    "This one needs a supervisor to approve, so I'm bringing my supervisor onto the line now, one second.",
    "I'm going to hand you over to my team lead, who can authorise that change.",
    "Let me pass you to our senior specialist, she handles these cases every day.",
)
_SUPERVISOR_INTROS = (
    "Hi, this is {name}, the shift supervisor. I've read the notes on your account.",
    "Hello, {name} here, I'm the team lead. I understand there's a problem we need to sort out.",
    "Good morning, it's {name}. I've got your file open in front of me.",
)
_TO_SUPERVISOR = (
    "Yes, I just want this sorted out today please.",
    "Thanks. I've already explained it twice, so I hope you can fix it.",
    "Great, I appreciate you taking the call.",
)
_SUPERVISOR_RESOLUTIONS = (
    "I've approved the exception, so the charge is removed and you'll see the credit within a week.",
    "I've authorised the change, and you'll get a confirmation by email this afternoon.",
    "Done, I've escalated the referral and booked a callback for tomorrow morning.",
)
_CLOSINGS = ("Okay, thank you so much.", "Great, that's all I needed.", "Alright, thanks for sorting it out.")
_GOODBYES = ("You're welcome, take care.", "Glad it's sorted, goodbye.", "No problem at all, bye now.")


def _customer(rng: random.Random) -> dict:
    return {"voice": rng.choice(CUSTOMER_VOICES), "rate": rng.randint(150, 185), "pitch": rng.randint(30, 70)}


def _body(name: str, agent_id: str, rng: random.Random, *, transfer: bool, caller_first: bool,
          agent_voice: str | None = None) -> dict:
    lines: list[dict] = []
    if caller_first:
        lines += [{"customer": rng.choice(_CALLER_FIRST)}, {"agent": rng.choice(_ANSWERS)}]
    else:
        lines += [{"agent": rng.choice(_GREETINGS).format(name=AGENT_NAMES[agent_id])}]
    lines += [{"customer": rng.choice(_ISSUES)}, {"agent": rng.choice(_FOLLOW_UPS)},
              {"customer": rng.choice(_DETAILS)}]
    body = {"scenario": f"Voice evaluation call {name}.", "agent_id": agent_id, "day": 0,
            "channel": rng.choice(["pcm16k", "ulaw8k"]), "customer": _customer(rng),
            "expected": dict.fromkeys(("billing_detected", "phi_before_verification", "phi_requested_unnecessarily",
                                       "missing_recording_disclosure", "issue_resolved", "escalation_requested",
                                       "overall_sentiment", "angry_caller")),
            "phi": []}
    if agent_voice:
        body["agent_voice"] = agent_voice
    if transfer:
        own = agent_voice or AGENT_VOICES[agent_id]
        voice = rng.choice([v for v in SUPERVISOR_VOICES if v != own])
        body["other_agent"] = {"id": "supervisor", "voice": voice}
        other = "other_agent"
        lines += [{"agent": rng.choice(_TRANSFERS)},
                  {other: rng.choice(_SUPERVISOR_INTROS).format(name=rng.choice(SUPERVISOR_NAMES)), "gap_s": 1.2},
                  {"customer": rng.choice(_TO_SUPERVISOR)}, {other: rng.choice(_SUPERVISOR_RESOLUTIONS)},
                  {"customer": rng.choice(_CLOSINGS)}, {other: rng.choice(_GOODBYES)}]
    else:
        lines += [{"agent": rng.choice(_RESOLUTIONS)}, {"customer": rng.choice(_CLOSINGS)},
                  {"agent": rng.choice(_GOODBYES)}]
    body["turns"] = lines
    return body


def count_scripts(part: str) -> list[DemoScript]:
    """The count calls of ``part`` ("dev" or "test"), one per seed; their truth says how many voices."""
    seeds = COUNT_DEV_SEEDS if part == "dev" else COUNT_TEST_SEEDS
    scripts = []
    for seed in seeds:
        rng = random.Random(seed)
        agent_id = rng.choice(sorted(AGENT_NAMES))  # the English agents (AGENT_VOICES also has Spanish ones)
        transfer = rng.random() < THREE_VOICE_SHARE
        name = f"count-{part}-{seed:03d}-{3 if transfer else 2}v"
        scripts.append(DemoScript(name, _body(name, agent_id, rng, transfer=transfer, caller_first=rng.random() < 0.3)))
    return scripts


def enrolment_scripts(part: str = "test") -> list[DemoScript]:
    """The enrolment calls of ``part``, each with its ``day`` (index into :data:`ENROLMENT_DATES`)."""
    rng = random.Random(ENROLMENT_SEEDS[part])
    prefix = "enrol" if part == "test" else f"enrol-{part}"
    scripts = []
    for agent_id in ENROLLED_AGENTS:
        for day, calls in enumerate(CALLS_PER_DATE[part]):
            for index in range(calls):
                name = f"{prefix}-{agent_id}-d{day}-{index}"
                # Enrolment days are ordinary calls (the agent answers); scored days often are not.
                caller_first = day >= 2 and rng.random() < 0.6
                body = _body(name, agent_id, rng, transfer=False, caller_first=caller_first)
                scripts.append(DemoScript(name, {**body, "day": day}))
    impostor = IMPOSTOR_CALL if part == "test" else IMPOSTOR_CALL.replace("enrol", prefix, 1)
    body = _body(impostor, IMPOSTOR_AGENT, rng, transfer=False, caller_first=False, agent_voice=IMPOSTOR_VOICE)
    scripts.append(DemoScript(impostor, {**body, "day": len(ENROLMENT_DATES) - 1, "impostor": True}))
    return scripts


# --- evaluation (``make bench``) --------------------------------------------------------------------

COUNT_TARGET = 0.90
ROLE_TARGET = 0.98
# Role accuracy is scored on 10 ms frames of the scripted turns that a transcript turn covers.
FRAME_S = 0.01


def count_evaluation(blob_root: Path, part: str, diarization: DiarizationConfig) -> dict[str, Any]:
    """Estimated vs scripted speaker count on the count calls of ``part``."""
    scripts = count_scripts(part)
    write_demo_calls(blob_root, [COUNT_DATE], scripts=scripts)
    calls = []
    for script in scripts:
        path = script.audio_path(blob_root, [COUNT_DATE])
        truth = load_truth(path)
        turns = diarize(decode_audio(path), diarization)
        calls.append({"call": script.name, "voices": len({t["speaker"] for t in truth["turns"]}),
                      "estimated": len({t.speaker for t in turns})})

    def accuracy(voices: int) -> float | None:
        chosen = [c for c in calls if c["voices"] == voices]
        return round(sum(c["estimated"] == voices for c in chosen) / len(chosen), 4) if chosen else None

    return {"part": part, "calls": calls, "three_voice_calls": sum(c["voices"] == 3 for c in calls),
            "three_voice_accuracy": accuracy(3), "two_voice_accuracy": accuracy(2),
            "accuracy": round(sum(c["estimated"] == c["voices"] for c in calls) / len(calls), 4)}


def model_stage_call(path: Path, truth: dict) -> dict[str, Any]:
    """The call row a model stage hands its task (what ingest and VAD would have recorded)."""
    return {"call_id": truth["call_id"], "audio_url": str(path), "size_bytes": path.stat().st_size,
            "checksum_sha256": sha256_of(path), "duration_s": truth["duration_s"]}


def role_accuracy(truth_turns: list[dict], turns: pd.DataFrame, roles: dict[str, str]) -> tuple[float, float]:
    """(correct, scored) seconds: scripted speech covered by a transcript turn whose speaker's role
    (``roles``) is the scripted role."""
    correct = scored = 0.0
    for truth in truth_turns:
        for row in turns.itertuples():
            overlap = min(truth["end_s"], row.end_s) - max(truth["start_s"], row.start_s)
            if overlap > 0:
                scored += overlap
                correct += overlap if roles[row.speaker] == truth["role"] else 0.0
    return correct, scored


def enrolment_evaluation(blob_root: Path, task: TranscriptTask, scripts: list[DemoScript] | None = None) -> dict[str, Any]:
    """Run the transcript task day by day over the enrolment calls (``scripts``, default all of
    :func:`enrolment_scripts`), each day with the voiceprints built from the samples of the days
    before (what the `transcripts` asset does), and score the roles of the later days with the
    voiceprint and with the phrase / first-speaker rule alone. The task writes no masked copy: the
    rows here are not stage rows, so they carry no ``redacted_audio_url``."""
    scripts = enrolment_scripts() if scripts is None else scripts
    task = dataclasses.replace(task, audio_redaction=None)
    write_demo_calls(blob_root, ENROLMENT_DATES, scripts=scripts)
    samples = pd.DataFrame()
    calls = []
    for day_index, day in enumerate(ENROLMENT_DATES):
        call_date = dt.date.fromisoformat(day)
        voiceprints = {row["agent_id"]: row for row in build_voiceprints(samples, call_date, task.enrollment)}
        day_samples = []
        for script in (s for s in scripts if s.body["day"] == day_index):
            path = script.audio_path(blob_root, ENROLMENT_DATES)
            truth = load_truth(path)
            voiceprint = voiceprints.get(script.agent_id)
            call = {**model_stage_call(path, truth), "agent_id": script.agent_id,
                    "agent_voiceprint_json": voiceprint["embedding_json"] if voiceprint else "",
                    "agent_voiceprint_calls": voiceprint["n_calls"] if voiceprint else 0}
            out = task(call)
            turns = pd.DataFrame(out["transcripts"])
            sample = out["agent_voice_samples"][0]
            day_samples.append({**sample, "call_date": call_date})
            speaker_words = {speaker: " ".join(turns.loc[turns["speaker"] == speaker, "text"]).split()
                             for speaker in dict.fromkeys(turns["speaker"])}
            heuristic = assign_roles(speaker_words, first_speaker=turns["speaker"].iloc[0])
            with_voice = dict(zip(turns["speaker"], turns["role"]))
            calls.append({
                "call": script.name, "agent_id": script.agent_id, "date": day, "scored": day_index >= 2,
                "impostor": bool(script.body.get("impostor")), "enrolled": voiceprint is not None,
                "role_source": sample["role_source"], "voice_match": sample["voice_match"],
                "voice_mismatch": sample["voice_mismatch"],
                "roles_voiceprint": role_accuracy(truth["turns"], turns, with_voice),
                "roles_heuristic": role_accuracy(truth["turns"], turns, heuristic),
            })
        samples = pd.concat([samples, pd.DataFrame(day_samples)], ignore_index=True)
    scored = [c for c in calls if c["scored"] and not c["impostor"]]

    def share(key: str) -> float:
        return round(sum(c[key][0] for c in scored) / sum(c[key][1] for c in scored), 4)

    impostor = next((c for c in calls if c["impostor"]), None)
    return {
        "agents": list(ENROLLED_AGENTS), "dates": ENROLMENT_DATES, "calls": calls, "scored_calls": len(scored),
        "role_accuracy_voiceprint": share("roles_voiceprint"), "role_accuracy_heuristic": share("roles_heuristic"),
        "roles_from_voiceprint": sum(c["role_source"] == "voiceprint" for c in scored),
        "impostor_caught": None if impostor is None else bool(impostor["voice_mismatch"]),
        "false_mismatches": sum(bool(c["voice_mismatch"]) for c in scored),
    }


def voices_section(work: Path, quick: bool) -> dict[str, Any] | None:
    """The bench's voices section (None with ``--quick``: it synthesizes and diarizes ~35 calls)."""
    if quick:
        return None
    from callintel_dagster.resources.models import ModelSettings

    models = ModelSettings(num_speakers=None)
    started = time.perf_counter()
    count = count_evaluation(work / "count", "test", models.diarization_config())
    enrolment = enrolment_evaluation(work / "enrolment", models.transcript_task())
    return {"speaker_count": count, "enrolment": enrolment, "seconds": round(time.perf_counter() - started, 1),
            "targets": {"three_voice_accuracy": COUNT_TARGET, "role_accuracy": ROLE_TARGET}}


def render_markdown(section: dict[str, Any] | None) -> list[str]:
    """Markdown lines for the bench report."""
    if section is None:
        return ["## 3d. Speaker count and agent voice enrollment", "", "Skipped with `--quick`.", ""]
    count, enrol = section["speaker_count"], section["enrolment"]
    return [
        f"## 3d. Speaker count and agent voice enrollment ({section['seconds']} s)",
        "",
        "| figure | value | target |",
        "|---|---|---|",
        f"| speaker count right, three-voice test calls ({count['three_voice_calls']}) | "
        f"{fmt(count['three_voice_accuracy'])} | >= {COUNT_TARGET} |",
        f"| speaker count right, two-voice test calls | {fmt(count['two_voice_accuracy'])} | |",
        f"| role accuracy by time, enrolled agents' later calls ({enrol['scored_calls']}), voiceprint | "
        f"{fmt(enrol['role_accuracy_voiceprint'])} | >= {ROLE_TARGET} |",
        f"| same calls, phrase / first-speaker rule only | {fmt(enrol['role_accuracy_heuristic'])} | |",
        f"| later calls whose roles came from the voiceprint | {enrol['roles_from_voiceprint']} of {enrol['scored_calls']} | |",
        f"| impostor call (another voice on the agent side) listed as voice mismatch | {enrol['impostor_caught']} | True |",
        f"| enrolled agents' own calls listed as voice mismatch | {enrol['false_mismatches']} | 0 |",
        "",
    ]


def main() -> None:
    """``python -m callintel_dagster.tools.voice_eval [--part dev|test] [--only count|enrolment]``: the
    bench's voices section alone (``--part dev`` scores the dev calls thresholds may be tuned on)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--part", choices=["dev", "test"], default="test")
    parser.add_argument("--only", choices=["count", "enrolment"], help="dev part: score one of the two sets")
    parser.add_argument("--output", type=Path, help="also write the section as JSON here")
    args = parser.parse_args()
    from callintel_dagster.resources.models import ModelSettings

    with tempfile.TemporaryDirectory(prefix="callintel-voices-") as work:
        if args.part == "dev":
            models = ModelSettings(num_speakers=None)
            section = {}
            if args.only != "enrolment":
                section["speaker_count"] = count_evaluation(Path(work) / "count", "dev", models.diarization_config())
            if args.only != "count":
                section["enrolment"] = enrolment_evaluation(Path(work) / "enrolment", models.transcript_task(),
                                                            enrolment_scripts("dev"))
            print(json.dumps(section, indent=2))
        else:
            section = voices_section(Path(work), quick=False)
            print("\n".join(render_markdown(section)))
    if args.output:
        args.output.write_text(json.dumps(section, indent=2))


if __name__ == "__main__":
    main()
