-- Rendered by `callintel powerbi` from callintel_dagster/star_schema.py; do not edit.
CREATE SCHEMA IF NOT EXISTS main.callintel_bi;

CREATE OR REPLACE VIEW main.callintel_bi.fact_call AS
SELECT call_id, call_date, agent_id, duration_s, talk_time_agent_s, talk_time_customer_s, max_anger, acoustic_stress, overall_sentiment, sentiment_score, issue_resolved, escalation_requested, billing_detected, anger_at_billing, anger_peak_topic, hipaa_flag_count, qa_priority, compliance_status
FROM main.callintel.fact_call;

CREATE OR REPLACE VIEW main.callintel_bi.fact_flag AS
SELECT call_id, call_date, agent_id, flag, evidence_index, turn_index, quote
FROM main.callintel.fact_flag;

CREATE OR REPLACE VIEW main.callintel_bi.fact_turn_tone AS
SELECT call_id, call_date, agent_id, turn_index, role, start_s, sentiment, sentiment_label, tone_negative, anger_peak_topic
FROM main.callintel.fact_turn_tone;

CREATE OR REPLACE VIEW main.callintel_bi.dim_agent AS
SELECT DISTINCT agent_id AS agent_id
FROM (
SELECT agent_id FROM main.callintel.fact_call
UNION
SELECT agent_id FROM main.callintel.fact_flag
UNION
SELECT agent_id FROM main.callintel.fact_turn_tone
);

CREATE OR REPLACE VIEW main.callintel_bi.dim_date AS
SELECT DISTINCT call_date AS date, year(call_date) AS year, date_format(call_date, 'yyyy-MM') AS month, date_format(call_date, 'E') AS weekday
FROM (
SELECT call_date FROM main.callintel.fact_call
UNION
SELECT call_date FROM main.callintel.fact_flag
UNION
SELECT call_date FROM main.callintel.fact_turn_tone
);
