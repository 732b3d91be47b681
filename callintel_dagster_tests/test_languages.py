"""Languages: the multilingual Whisper base assembled from its wheels, language detection on
generated Spanish and English speech, the Spanish lexicon (rules, redaction, sentiment, categories)
on wordings written for these tests, and a Spanish call through the graph."""

from __future__ import annotations

import dataclasses
import threading

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from callintel_dagster.engines import asr
from callintel_dagster.engines.categories import HEALTHCARE_CATEGORIES_ES, load_categories, match_categories
from callintel_dagster.engines.model_cache import loaded_model_keys
from callintel_dagster.engines.redaction import redact_text
from callintel_dagster.engines.reference import word_error_rate
from callintel_dagster.engines.rules import assess_call_with_rules, call_language
from callintel_dagster.engines.sentiment import compound
from callintel_dagster.tools.demo_calls import Voice

SPANISH_LINE = ("Buenas tardes, le habla Marta del consultorio. Su cita con el doctor quedó para el martes "
                "a las diez de la mañana. Gracias por llamar y que tenga un buen día.")
ENGLISH_LINE = ("Good afternoon, this is Martha from the doctor's office. Your appointment is now on Tuesday "
                "at ten in the morning. Thanks for calling and have a nice day.")


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("models"))


def _speech(voice: str, text: str, tmp_path) -> np.ndarray:
    return Voice(voice).synthesize(text, tmp_path)


# --- the model --------------------------------------------------------------------------------------

def test_multilingual_model_is_assembled_once_verified_and_replaced_when_truncated(tmp_path):
    target = asr.multilingual_model_dir(tmp_path)
    model_bin = target / "model.bin"
    assert model_bin.stat().st_size == asr.MULTILINGUAL_MODEL_BIN_SIZE
    assert {p.name for p in target.iterdir()} == {"model.bin", *asr.MULTILINGUAL_SIDE_FILES}
    stamp = model_bin.stat().st_mtime_ns
    assert asr.multilingual_model_dir(tmp_path) == target and model_bin.stat().st_mtime_ns == stamp  # reused
    with open(model_bin, "r+b") as handle:  # an interrupted copy by other means
        handle.truncate(1000)
    asr.multilingual_model_dir(tmp_path)
    assert model_bin.stat().st_size == asr.MULTILINGUAL_MODEL_BIN_SIZE
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_concurrent_workers_assemble_one_model_directory(tmp_path):
    results, errors = [], []

    def worker():
        try:
            results.append(asr.multilingual_model_dir(tmp_path))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(set(results)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [asr.MULTILINGUAL_DIRNAME]


def test_multilingual_model_loads_once_per_process(models_dir):
    config = asr.multilingual_config(asr.AsrConfig(models_dir=models_dir), "es")
    assert asr.load_whisper(config) is asr.load_whisper(config)
    assert sum(key[0] == "faster-whisper" and key[1] == config.model for key in loaded_model_keys()) == 1


def test_one_configured_language_needs_no_detection():
    silence = np.zeros(16_000, dtype=np.float32)
    assert asr.detect_language(silence, asr.AsrConfig(languages="es")) == ("es", None)
    assert asr.config_for_language(asr.AsrConfig(), "en").model is None  # tiny.en stays the English model



def test_unsure_english_transcript_gets_a_second_opinion_and_the_more_confident_one_wins(models_dir, tmp_path):
    audio = _speech("espeak-ng:en-us+m3", ENGLISH_LINE, tmp_path)
    english = asr.AsrConfig(models_dir=models_dir)
    multilingual = asr.multilingual_config(english, "en")
    first, second = asr.transcribe(audio, english), asr.transcribe(audio, multilingual)
    confidences = asr.mean_probability(first), asr.mean_probability(second)
    assert confidences[0] != confidences[1]
    # Word probabilities never exceed 1: a threshold above it always asks for the second opinion.
    words, fell_back = asr.transcribe_with_fallback(audio, dataclasses.replace(english, fallback_confidence=1.01))
    assert fell_back == (confidences[1] > confidences[0])
    assert words == (second if fell_back else first)
    for never in (None, 0.0):  # off, or every transcript confident enough
        assert asr.transcribe_with_fallback(audio, dataclasses.replace(english, fallback_confidence=never)) == (first, False)
    # A call in another language is the multilingual model's already: no second pass.
    spanish = dataclasses.replace(multilingual, language="es", fallback_confidence=1.01)
    assert asr.transcribe_with_fallback(audio, spanish)[1] is False


def test_model_id_names_the_model_whose_transcript_was_kept():
    from callintel_dagster.resources.models import ModelSettings

    task = ModelSettings().transcript_task()
    assert task.asr.fallback_confidence == 0.8
    assert task.model_id("en").startswith("whisper:tiny.en|")
    assert task.model_id("en", fell_back=True).startswith("whisper:base:en|")
    assert task.channel_model_id("es").startswith("whisper:base:es|channel_map:")

# --- detection and transcription on generated speech -------------------------------------------------

@pytest.mark.parametrize(("voice", "text", "expected"), [
    ("espeak-ng:es", SPANISH_LINE, "es"),
    ("espeak-ng:es-419+f2", SPANISH_LINE, "es"),
    ("espeak-ng:en-us+m3", ENGLISH_LINE, "en"),
    ("flite:slt", ENGLISH_LINE, "en"),
])
def test_language_is_detected_on_generated_speech(voice, text, expected, models_dir, tmp_path):
    config = asr.AsrConfig(languages="en,es", models_dir=models_dir)
    language, probability = asr.detect_language(_speech(voice, text, tmp_path), config)
    assert language == expected and 0.5 < probability <= 1.0


def test_a_spanish_call_is_transcribed_in_spanish(models_dir, tmp_path):
    config = asr.AsrConfig(languages="en,es", models_dir=models_dir)
    audio = _speech("espeak-ng:es-419", SPANISH_LINE, tmp_path)
    words = asr.transcribe(audio, asr.config_for_language(config, "es"))
    spanish = " ".join(w.text for w in words)
    english_model = " ".join(w.text for w in asr.transcribe(audio, config))
    assert word_error_rate(SPANISH_LINE, spanish) < 0.5
    assert word_error_rate(SPANISH_LINE, spanish) < word_error_rate(SPANISH_LINE, english_model)


# --- the Spanish lexicon, on wordings of these tests -------------------------------------------------

def _call(*lines: tuple[str, str], language: str | None = "es") -> list[dict]:
    return [{"turn_index": i, "role": role, "text": text, **({"language": language} if language else {})}
            for i, (role, text) in enumerate(lines)]


def test_spanish_rules_flag_billing_escalation_and_a_missing_disclosure():
    call = _call(
        ("agent", "Centro de Especialidades Norte, buenas noches."),
        ("customer", "Oiga, en el recibo del hospital me pusieron un cargo por una cita a la que nunca fui."),
        ("agent", "Qué raro. ¿Me dice su fecha de nacimiento para buscarlo?"),
        ("customer", "El veinte de enero de 1977. Y ya es la segunda vez que llamo, páseme a su supervisor."),
        ("agent", "Desde aquí no puedo borrar ese cargo; le transfiero con la supervisora."),
    )
    assessment = assess_call_with_rules(call)
    assert assessment.billing_detected and assessment.escalation_requested
    assert assessment.hipaa_risk.missing_recording_disclosure
    assert assessment.issue_resolved is False and assessment.overall_sentiment == "negative"
    assert not assessment.hipaa_risk.phi_before_verification


def test_spanish_rules_see_phi_before_verification_and_a_resolution():
    call = _call(
        ("agent", "Farmacia del Parque; por su protección grabamos la conversación."),
        ("customer", "Hola, hablo por mi abuelo, quiero saber qué le recetaron."),
        ("agent", "Le mandaron amoxicilina, una cápsula cada ocho horas por diez días, y ya quedó lista."),
        ("customer", "Estupendo, paso por ella en la tarde. ¡Mil gracias!"),
    )
    assessment = assess_call_with_rules(call)
    assert assessment.hipaa_risk.phi_before_verification
    assert not assessment.hipaa_risk.missing_recording_disclosure
    assert assessment.issue_resolved is True and assessment.overall_sentiment == "positive"
    assert not assessment.billing_detected and not assessment.escalation_requested


def test_a_topic_ruled_out_is_not_billing_and_the_lexicon_follows_the_call_language():
    ruled_out = _call(("customer", "No le hablo por nada de cobros, solo quiero la dirección de la clínica."),
                      ("agent", "Estamos en la avenida principal, al lado del banco."))
    assert not assess_call_with_rules(ruled_out).billing_detected
    demand = (("agent", "Clínica Sur, esta llamada se graba."), ("customer", "Quiero hablar con el gerente ahora mismo."))
    assert assess_call_with_rules(_call(*demand)).escalation_requested
    assert not assess_call_with_rules(_call(*demand, language="en")).escalation_requested  # English lexicon
    assert assess_call_with_rules(_call(*demand, language=None), language="es").escalation_requested
    assert call_language(pd.DataFrame(_call(*demand))) == "es" and call_language(_call(*demand, language=None)) == "en"


def test_spanish_phi_is_redacted_from_spoken_forms():
    cases = {
        "Nací el veinte de enero de mil novecientos setenta.": "[DOB]",
        "Está a nombre de Guadalupe Reyes.": "[NAME]",
        "El número de póliza es X 7 7 3 1 0 9.": "[MEMBER_ID]",
        "Ella vive en el 88 avenida Los Robles.": "[ADDRESS]",
        "Mi celular es tres uno cero cinco cinco cinco cuatro dos dos uno.": "[PHONE]",
    }
    for text, placeholder in cases.items():
        redacted, _ = redact_text(text)
        assert placeholder in redacted, (text, redacted)
    for leaked in ("veinte de enero", "Guadalupe", "7 7 3 1", "88 avenida", "cuatro dos dos"):
        assert all(leaked not in redact_text(text)[0] for text in cases)


def test_spanish_sentiment_scores_praise_and_complaint():
    assert compound("¡Qué amable, muchas gracias, todo excelente!", "es") > 0.5
    assert compound("Es un desastre, estoy harta y molesta.", "es") < -0.5
    assert compound("no estoy contenta", "es") < 0
    assert compound("Es un desastre", "en") == 0.0  # VADER's English lexicon has none of these words


def test_spanish_categories_match_spanish_phrases():
    rules = load_categories(HEALTHCARE_CATEGORIES_ES)
    turns = pd.DataFrame([
        {"turn_index": 0, "role": "agent", "start_s": 0.0, "end_s": 4.0, "text": "Hospital Central, buenos días.",
         "phi_kinds": "[]"},
        {"turn_index": 1, "role": "customer", "start_s": 4.5, "end_s": 9.0,
         "text": "Quiero hablar con su supervisor, por favor.", "phi_kinds": "[]"},
        {"turn_index": 2, "role": "agent", "start_s": 9.5, "end_s": 14.0,
         "text": "Claro, ella le devuelve la llamada esta tarde.", "phi_kinds": "[]"},
    ])
    characteristics = [{"role": role, "interruptions_json": "[]"} for role in ("agent", "customer")]
    matched = {row["category"] for row in match_categories(rules, turns, characteristics, None, 15.0)}
    assert {"recording_disclosure_missing", "callback_offered_on_escalation"} <= matched
    assert "escalation_without_callback" not in matched
    turns.loc[0, "text"] = "Hospital Central, esta llamada se graba para control de calidad."
    matched = {row["category"] for row in match_categories(rules, turns, characteristics, None, 15.0)}
    assert "recording_disclosure_missing" not in matched


# --- through the graph -------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_spanish_call_gets_language_es_and_spanish_flags(resources, blob_root, tmp_path):
    from callintel_dagster.assets.compliance import compliance_flags
    from callintel_dagster.assets.ingest import raw_call_audio
    from callintel_dagster.assets.segments import valid_segments
    from callintel_dagster.assets.transcripts import transcripts
    from callintel_dagster.resources.llm import RulesAssessor
    from callintel_dagster.resources.models import ModelSettings
    from callintel_dagster.tools.demo_calls import DemoScript, write_demo_calls
    from callintel_dagster_tests.conftest import DAY_TWO, InlineCompute

    expected = dict.fromkeys(("billing_detected", "phi_before_verification", "phi_requested_unnecessarily",
                              "missing_recording_disclosure", "issue_resolved", "escalation_requested",
                              "angry_caller", "overall_sentiment"))
    spanish = DemoScript("factura-supervisor", {
        "scenario": "A Spanish caller disputes a bill and asks for a supervisor.", "agent_id": "agente-mateo",
        "day": 0, "channel": "ulaw8k", "customer": {"voice": "espeak-ng:es+m3"}, "expected": expected, "phi": [],
        "turns": [
            {"agent": "Buenos días, clínica del centro."},
            {"customer": "Buenos días. Tengo una factura de trescientos dólares que no entiendo."},
            {"agent": "Lo siento, esa factura no la puedo cambiar."},
            {"customer": "Entonces quiero hablar con un supervisor."},
        ]})
    english = DemoScript("billing-en", {**spanish.body, "agent_id": "agent-bo", "customer": {"voice": "espeak-ng:en-us+f2"},
                                        "turns": [{"agent": "Good morning, downtown clinic."},
                                                  {"customer": "Good morning, I have a question about my bill."},
                                                  {"agent": "Sure, the balance is forty dollars."},
                                                  {"customer": "Okay, thank you."}]})
    write_demo_calls(blob_root, [DAY_TWO], scripts=[spanish, english])
    resources |= {"compute": InlineCompute(), "models": ModelSettings(models_root=str(tmp_path / "models")),
                  "compliance_assessor": RulesAssessor()}
    result = dg.materialize([raw_call_audio, valid_segments, transcripts, compliance_flags],
                            partition_key=DAY_TWO, resources=resources)
    assert result.success
    lakehouse = resources["lakehouse"]
    raw = lakehouse.read("raw_call_audio").set_index("blob_key")["call_id"]
    call_ids = {name: raw[f"{DAY_TWO}/{agent}__{name}.wav"]
                for name, agent in (("factura-supervisor", "agente-mateo"), ("billing-en", "agent-bo"))}
    metrics = lakehouse.read("conversation_metrics").set_index("call_id")
    assert metrics.loc[call_ids["factura-supervisor"], "language"] == "es"
    assert metrics.loc[call_ids["factura-supervisor"], "language_probability"] > 0.5
    assert metrics.loc[call_ids["factura-supervisor"], "model_id"].startswith("whisper:base:es")
    assert metrics.loc[call_ids["billing-en"], "language"] == "en"
    # tiny.en, or the multilingual model's English second opinion when tiny.en was unsure.
    assert metrics.loc[call_ids["billing-en"], "model_id"].split("|")[0] in ("whisper:tiny.en", "whisper:base:en")
    english_model = metrics.loc[call_ids["billing-en"], "model_id"].split("|")[0]
    materialization = next(m for m in result.asset_materializations_for_node("transcripts")
                           if m.asset_key == dg.AssetKey("transcripts"))
    assert materialization.metadata["calls_by_asr_model"].value == {"whisper:base:es": 1, english_model: 1}
    turns = lakehouse.read("transcripts")
    assert set(turns.loc[turns["call_id"] == call_ids["factura-supervisor"], "language"]) == {"es"}
    flags = lakehouse.read("compliance_flags").set_index("call_id")
    spanish_flags = flags.loc[call_ids["factura-supervisor"]]
    assert spanish_flags["billing_detected"] and spanish_flags["escalation_requested"]
    assert spanish_flags["missing_recording_disclosure"]


def test_spanish_corpus_split_has_every_flag_both_ways_in_both_parts():
    from callintel_dagster.tools.compliance_eval import SCORED_FLAGS, corpus_part, load_corpus, split

    scripts = load_corpus("es")
    assert len(scripts) >= 20 and not {s.name for s in scripts} & {s.name for s in load_corpus("en")}
    assert split([s.name for s in scripts]) == split([s.name for s in reversed(scripts)])  # seeded, order-free
    for part in ("dev", "test"):
        expected = [s.body["expected"] for s in corpus_part(part, "es")]
        for flag in SCORED_FLAGS:
            assert {e[flag] for e in expected} == {True, False}, (part, flag)
