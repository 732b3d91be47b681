"""The Spanish lexicon of the rules engine, PHI redaction and text sentiment (pure Python; no Dagster).

Written from everyday Spanish of US contact centres (Mexican, Caribbean, Central American and
peninsular usage) rather than from any evaluation call, then tuned on the ``dev`` part of the Spanish
corpus only (``tools/eval_corpus/es/``, split seed in ``tools/compliance_eval.py``); the ``test`` part
scores it. Patterns are accent-tolerant: every accented vowel also matches its bare form, because
ASR and typists drop accents ("facturacion", "llamo"/"llamó").

Limits, said plainly: no Spanish NER model runs (the spaCy model is English), so names are found by
cues ("me llamo", "a nombre de", "mi esposa") and by the English model's PERSON hits, which catch
many Spanish names but not all; "su" is both "your" and "his/her", so another person's appointment
is not told apart from the caller's own; sentiment uses VADER's algorithm with the small hand-made
valence list below, which is coarser than VADER's 7,500-word English lexicon.
"""

from __future__ import annotations

import re

from .lexicon import Lexicon

_ACCENTS = {"á": "[aá]", "é": "[eé]", "í": "[ií]", "ó": "[oó]", "ú": "[uúü]"}


def fold(pattern: str) -> str:
    """`pattern` with every accented vowel also matching its bare form (write no accented vowel
    inside a character class)."""
    return "".join(_ACCENTS.get(char, char) for char in pattern)


def _words(*phrases: str) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + fold("|".join(phrases)) + r")\b", re.IGNORECASE)


def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(fold(pattern), re.IGNORECASE)


# --- numbers, months: shared with redaction ---
DIGIT_WORDS = r"(?:cero|uno|una|dos|tres|cuatro|cinco|seis|siete|ocho|nueve)"
_UNIT = r"(?:uno|un|una|dos|tres|cuatro|cinco|seis|siete|ocho|nueve)"
_TEENS = r"(?:diez|once|doce|trece|catorce|quince|dieciséis|diecisiete|dieciocho|diecinueve|veinte|veinti\w+)"
_TENS = r"(?:treinta|cuarenta|cincuenta|sesenta|setenta|ochenta|noventa)(?: y " + _UNIT + ")?"
_HUNDREDS = r"(?:cien|ciento|doscientos|trescientos|cuatrocientos|quinientos|seiscientos|setecientos|ochocientos|novecientos|mil)"
NUMBER = rf"(?:\d[\d.,]*|{_UNIT}|{_TEENS}|{_TENS}|{_HUNDREDS})"
MONTHS = r"(?:enero|febrero|marzo|abril|mayo|junio|julio|agosto|septiembre|setiembre|octubre|noviembre|diciembre)"
_DAY = rf"(?:\d{{1,2}}|primero|{_UNIT}|{_TEENS}|treinta(?: y uno)?)"
_YEAR = rf"(?:\d{{4}}|(?:mil novecientos|dos mil)(?: {_TENS}| {_TEENS}| {_UNIT})?)"
# "3 de abril de 1988", "el doce de mayo del noventa", "tres de abril de mil novecientos ochenta y ocho".
DATE = fold(rf"\b{_DAY}\s+de\s+{MONTHS}\b(?:\s+del?\s+{_YEAR}\b)?")

# --- rules lexicon ---
_TOPIC_NEGATED = _regex(
    r"(?:\bno\s+(?:\w+\s+){0,3}(?:por|sobre|de|acerca de|con|para)\s+(?:una?|la|el|los|las|mi|su|ningún|ninguna|nada de)?"
    r"|\bnada (?:que ver )?con(?: el| la| los| las)?|\bningún|\bninguna|\bni (?:una?|la|el)?)\s*$")

SPANISH = Lexicon(
    language="es",
    billing_topics=(
        ("bill", _words(r"facturas?", r"facturación", r"factura(?:r|ron|mos|do)", r"estados? de cuenta",
                        r"cuentas? (?:del|de la|de su|de mi) (?:hospital|clínica|médico|consulta|operación|cirugía)")),
        ("charge", _words(r"cobr(?:o|os|ar|aron|ó|an|ando|aba|amos|é|ado|ada)", r"cargos?", r"recargos?",
                          r"cobranzas?", r"intereses")),
        ("copay", _words(r"co-?pagos?", r"coaseguro")),
        ("deductible", _words(r"deducibles?")),
        ("claim", _words(r"reclamaci(?:ón|ones)", r"reclamos? (?:del|al|de su|de mi|con el) (?:seguro|plan)",
                         r"apelaci(?:ón|ones)", r"(?:el|su|mi|ese|este) reclamo")),
        ("refund", _words(r"reembols\w*", r"devol(?:ver|vemos|vieron|ución)(?: \w+)? (?:el|su|mi|la) (?:dinero|diferencia|pago)",
                          r"(?:le|me) (?:devuelven|devolvemos|regresan|regresamos)", r"regresar (?:el|la|mi|su) (?:dinero|diferencia)",
                          r"acredit\w+", r"crédito a su")),
        ("balance", _words(r"saldos?", r"deudas?", r"debo", r"debemos", r"le debo", r"adeud\w+",
                           r"pendiente de pago", r"agencia de cobr\w+")),
        ("payment", _words(r"pagos?", r"pagar(?:lo|la)?", r"pagué", r"pagó", r"pagaron", r"pagad[oa]", r"pago",
                           r"paga(?:n|mos)?", r"mensualidad(?:es)?", r"cuotas?", r"abonos?", r"plan de pagos?")),
        ("statement", _words(r"estados? de cuenta", r"explicación de beneficios", r"EOB")),
        ("out-of-pocket", _words(r"de (?:su|mi|nuestro) (?:propio )?bolsillo")),
        ("premium", _words(r"primas? (?:del|de su|de mi|mensual\w*)", r"mensualidad del seguro")),
        ("cost", re.compile(fold(r"\b(?:cuestan?|costos?|coste|precios?|tarifas?|honorarios|descuentos?|cupón|cupones"
                                 r"|cuánto (?:es|sale|cobran|vale)|\$\s?\d[\d,.]*|" + NUMBER + r"(?:[ -]\w+)? (?:dólares|dólar|pesos))\b"),
                            re.IGNORECASE)),
    ),
    topic_negated=_TOPIC_NEGATED,
    id_cue=_regex(r"\b(?:número|id|identificación|miembro|afiliad[oa]|socio|social|póliza|cuenta|expediente|seguro)\b[^.?!]{0,30}$"),
    clinical=(
        _regex(r"\b(?:resultados?|biopsia|patología|radiografías?|rayos x|tomografías?|resonancia|ecografía|ecocardiograma|eco"
               r"|ultrasonido|mamografía|análisis|laboratorios?|exámenes|examen|glucosa|azúcar|colesterol|presión|potasio"
               r"|hemoglobina|pruebas?|cultivo)\b[^.?!]{0,40}?\b(?:salió|salieron|sale|salen|muestra|mostró|dio|dieron|está|estaba"
               r"|fue|es|son|resultó|vino|vinieron|quedó|le (?:salió|dio))\b[^.?!]{0,30}?\b(?:benign[oa]s?|malign[oa]s?|canceros[oa]s?"
               r"|positiv[oa]s?|negativ[oa]s?|normal(?:es)?|anormal(?:es)?|alt[oa]s?|baj[oa]s?|elevad[oa]s?|bien|buen[oa]s?|limpi[oa]s?"
               r"|estable|" + NUMBER + r")\b"),
        _words(r"diagnosticad[oa] con", r"(?:su|el) diagnóstico", r"fractura", r"neumonía", r"cáncer", r"tumor(?:es)?",
               r"quimio(?:terapia)?", r"infusi(?:ón|ones)", r"diálisis", r"insulina", r"antibióticos?", r"inhalador(?:es)?",
               r"diabetes", r"embarazo", r"embarazada"),
        _regex(r"\b" + NUMBER + r"\s+(?:miligramos?|mg|microgramos?|unidades|pastillas?|tabletas?|cápsulas?|gotas|inhalaciones"
               r"|disparos|ml|mililitros)\b"),
        _words(r"(?:una|dos|tres|cuatro) veces al día", r"cada (?:\d+|" + _UNIT + r"|doce) horas",
               r"(?:le|la|lo) (?:subió|subieron|bajó|bajaron|aumentó|aumentaron|cambió|cambiaron|suspendió|suspendieron|redujo"
               r"|redujeron) (?:la|el|su) \w+"),
        re.compile(r"\b[a-záéíóúñ]+(?:pril|olol|statina|pina|zol|cilina|micina|oxetina|tralina|sona|solona|formina"
                   r"|sartán|sartan|terol|azepam|prazol|tidina)\b", re.IGNORECASE),
    ),
    identity_item=_words(r"fecha de nacimiento", r"fecha de nac\w*", r"cumpleaños", r"nació", r"nacid[oa]",
                         r"número de (?:miembro|afiliad[oa]|socio|póliza|identificación|expediente|seguro social|cuenta|seguro)",
                         r"seguro social", r"social", r"últimos (?:cuatro|4)", r"dirección", r"domicilio",
                         r"con quién (?:hablo|tengo el gusto)", r"identidad", r"permiso", r"nombre completo",
                         r"apellido de soltera"),
    identity_request=_words(r"su (?:fecha de nacimiento|número de (?:miembro|afiliad[oa]|socio|póliza|expediente"
                            r"|seguro social))", r"(?<!mi )nombre y fecha de nacimiento"),
    asks=_words(r"me (?:puede|podría|da|dice|confirma|proporciona|indica|permite|regala)", r"puede (?:darme|decirme|confirmarme)",
                r"podría", r"cuál es", r"cuáles son", r"necesito", r"necesitaría", r"por favor", r"dígame", r"deme",
                r"confírmeme", r"indíqueme", r"confirm\w*", r"verific\w*", r"para (?:proteger|su seguridad)"),
    verified=_words(r"(?:ya )?(?:está|quedó|queda) verificad[oa]", r"(?:lo|la|le) (?:verifiqué|he verificado|confirmé)",
                    r"ya (?:lo|la) verifiqué", r"(?:todo|eso|los datos) coincide(?:n)?", r"coincide(?:n)?",
                    r"(?:todo )?(?:es|está) correcto", r"gracias por (?:verificar|confirmar)", r"identidad confirmada",
                    r"verificad[oa]", r"confirmad[oa]"),
    asks_full_ssn=_words(r"(?:número (?:de|del) )?seguro social(?: completo)?", r"social completo", r"ssn"),
    last_four=_words(r"últimos (?:cuatro|4)"),
    identity_nouns=_words(r"fecha de nacimiento", r"seguro social", r"número de (?:miembro|afiliad[oa]|socio)",
                          r"apellido de soltera"),
    recording=_words(r"grab(?:a|an|ada|adas|ado|ados|ando|amos|ar|arse|ación|aciones)", r"monitore(?:a|an|ada|ado|ando|amos|ar|o)",
                     r"registrad[oa]", r"escuchad[oa]", r"supervisad[oa]", r"grabadora"),
    channel=_words(r"llamadas?", r"conversaci(?:ón|ones)", r"línea", r"esta", r"calidad", r"capacitación", r"capacitar",
                   r"entrenamiento", r"mejorar", r"servicio", r"atención", r"seguridad"),
    recording_opening=_words(r"grabada", r"grabado", r"grabando", r"se graba", r"se graban", r"grabamos", r"grabación",
                             r"monitoreada", r"monitoreado", r"(?:control|motivos|fines|efectos) de calidad",
                             r"por calidad", r"para (?:mejorar|capacitar|entrenamiento)"),
    not_=_regex(r"\b(?:no|nunca|jamás)\s+(?:se\s+|va a ser\s+|será\s+|está\s+|es\s+)?(?:siendo\s+)?$"),
    escalation=_regex(
        r"\b(?:supervisor(?:a|es|as)?|supervisión|gerentes?|jef[ae]s?|encargad[oa]s?|coordinador(?:a|es)?|director(?:a)?"
        r"|escal(?:ar|o|é|ado|amos|arlo|arla|ación)|elev(?:o|é|amos|ar|arlo) (?:el|su|la|este) (?:caso|queja|reclamo)"
        r"|alguien (?:con más autoridad|de más arriba|superior|que mande|a cargo|responsable|encargado)"
        r"|(?:un|una|su|al|a un|a su) superior|queja formal|(?:poner|presentar|levantar|hacer) una queja"
        r"|departamento de quejas|oficina de quejas)\b"),
    escalation_negated=_regex(r"\b(?:no (?:necesito|hace falta|quiero|es necesario|pido|hay que)|sin necesidad de|sin)\b(?:\s+\w+){0,2}\s*$"),
    outcome=_words(
        r"(?:ya )?(?:le |lo |la |los |las |se lo |se la )?(?:cambié|pasé|reservé|cancelé|anulé|envié|mandé|solicité|programé|agendé"
        r"|arreglé|procesé|apliqué|quité|eliminé|agregué|reembolsé|acredité|registré|ajusté|armé|renové|autoricé|aprobé"
        r"|actualicé|corregí|moví|añadí|devolví|surtí|hice|reprogramé|quitamos|corregimos|enviamos|mandamos|cancelamos)",
        r"(?:ya )?(?:está|están|quedó|quedaron|queda|quedan) (?:list[oa]s?|cancelad[oa]s?|programad[oa]s?|agendad[oa]s?|reservad[oa]s?"
        r"|aprobad[oa]s?|pagad[oa]s?|corregid[oa]s?|resuelt[oa]s?|arreglad[oa]s?|surtid[oa]s?|activ[oa]s?|enviad[oa]s?"
        r"|hech[oa]s?|actualizad[oa]s?|hech[oa])",
        r"(?:se|fue|ha sido|han sido) (?:pagó|pagad[oa]|aprobó|aprobad[oa]|resolvió|resuelt[oa]|corrigió|corregid[oa]|envió|enviad[oa])",
        r"no (?:tiene|tienen|tiene que|debe|deben) (?:saldo|nada|que pagar|pagar)", r"no (?:se le|le) (?:cobra|cobramos|va a cobrar)",
        r"no necesita (?:cita|hacer nada|pagar)", r"puede (?:llegar|pasar|recogerl[oa]s?|venir) (?:directamente|hoy|mañana|cuando)",
        r"(?:le|les) (?:va a llegar|llegará|llegan)", r"ya (?:puede|pueden)", r"listo", r"resuelto", r"así es",
        r"(?:es|está) correcto", r"tiene razón"),
    not_done=_words(
        r"no (?:le )?(?:puedo|podemos|pude|es posible)", r"no (?:tengo|tenemos) (?:forma|manera|autorización|cómo|acceso)",
        r"no hay (?:forma|manera|decisión|una decisión|respuesta)", r"sin (?:el|la|los|las) \w+ no",
        r"(?:solo|sólo|solamente) (?:el|la|los|las) [\w ]{1,25}(?:puede|pueden|lo hace|lo hacen|lo ve|lo ven)",
        r"(?:tiene|tienen) que (?:pasar|ir|revisarlo|aprobarlo)",
        r"(?:sigue|siguen|está|están|todavía está|aún está) (?:en revisión|pendiente|sin autorización|sin aprobar|sin respuesta)",
        r"todavía no", r"aún no", r"lista de espera",
        r"(?:le|la|lo|les) (?:va|van|vamos) a (?:llamar|contactar|devolver|comunicar|avisar)",
        r"(?:le|la|lo) (?:llamará|llamarán|contactará|contactarán|contactan|llaman|devuelve la llamada|devolverá)",
        r"se (?:comunica|comunicará|comunican|pondrá en contacto)", r"no está (?:disponible|ahora|hoy)",
        r"no cuelgue", r"espere", r"en espera", r"le (?:comunico|paso|transfiero) con", r"transfer\w+",
        r"le dejo (?:el|un) (?:mensaje|recado|nota)", r"le dejo una nota"),
    acknowledged=_words(
        r"eso (?:me )?(?:aclara|explica|ayuda|resuelve)", r"(?:es|era|eso es) (?:justo|exactamente|todo) lo que (?:necesitaba|quería)",
        r"entendido", r"ya entend\w+", r"ya veo", r"perfecto", r"excelente", r"genial", r"maravill\w+",
        r"qué (?:bien|bueno|alivio|maravilla|buena noticia)", r"buenísimo", r"estupendo", r"de acuerdo",
        r"me (?:sirve|funciona|viene bien|queda bien)", r"(?:le|se lo) agradezco", r"muy amable", r"me salvó",
        r"ya me llegó", r"(?:paso|voy|iré) (?:a|por)", r"le (?:aviso|digo|voy a avisar|voy a decir)", r"muchísimas gracias",
        r"mil gracias", r"ya (?:entré|funciona|quedó)"),
    complaint=_words(
        r"inaceptable", r"ridícul\w+", r"una (?:vergüenza|burla|falta de respeto)", r"inútil(?:es)?", r"no sirve(?:n)? (?:de|para) nada",
        r"olvídel\w*", r"(?:me|nos) voy a quejar", r"(?:voy a|vamos a) (?:reportar|denunciar|demandar|quejarme)", r"abogad[oa]",
        r"abuso", r"qué desastre", r"(?:siempre|otra vez) lo mismo", r"como sea", r"ya veremos", r"gracias por nada",
        r"ya me cansé", r"hart[oa]", r"no puede ser", r"estoy (?:muy )?(?:molest[oa]|enojad[oa]|frustrad[oa]|indignad[oa])",
        r"pésimo", r"qué mal servicio", r"sigo igual", r"no me (?:resolvieron|ayudaron|sirvió)"),
    thanks=_words(r"gracias", r"se lo agradezco", r"muy amable"),
    frustration=_words(
        r"(?:segunda|tercera|cuarta|quinta) vez", r"(?:dos|tres|cuatro|cinco|\d+) (?:veces|llamadas|días|semanas|meses)",
        r"nadie (?:me |nos )?(?:avisó|llamó|dijo|explicó|contestó|ayuda|hace)", r"nunca (?:llegó|llamaron|contestaron|me)",
        r"no (?:puedo|podemos) pagar", r"hart[oa]", r"cansad[oa] de", r"ustedes siempre", r"de un lado (?:a|para) otro",
        r"no (?:voy|pienso) a pagar", r"no pienso pagar", r"indignante", r"frustra\w*", r"molest[oa]", r"enojad[oa]",
        r"con dolor", r"qué desastre", r"una y otra vez", r"peloteando", r"me traen de"),
    enthusiasm=re.compile(fold(
        r"!|¡|\b(?:muchísim[oa]s?|mil gracias|de corazón|qué (?:amable|bien|alivio|maravilla|buena noticia)|excelente|genial"
        r"|perfecto|maravill\w+|estupendo|buenísimo|fantástic[oa]|increíble|me salvó|se lo agradezco|muy amable"
        r"|tranquil[oa]|muy agradecid[oa]|bendiga|encantad[oa])\b"), re.IGNORECASE),
)

# --- text sentiment: a small valence list for VADER's algorithm (same −4..+4 scale as VADER's own) ---
VALENCE: dict[str, float] = {
    # positive
    "gracias": 1.5, "agradezco": 2.0, "agradecido": 2.0, "agradecida": 2.0, "amable": 2.0, "perfecto": 2.7,
    "excelente": 3.0, "genial": 2.8, "maravilla": 3.0, "maravilloso": 3.0, "maravillosa": 3.0, "estupendo": 2.8,
    "buenísimo": 2.9, "bueno": 1.5, "buena": 1.5, "bien": 1.4, "alivio": 2.0, "feliz": 2.7, "contento": 2.3,
    "contenta": 2.3, "tranquilo": 1.5, "tranquila": 1.5, "fantástico": 3.0, "increíble": 2.5, "encantado": 2.5,
    "encantada": 2.5, "ayuda": 1.2, "claro": 0.8, "gusto": 1.5, "rápido": 1.0, "resuelto": 1.8, "listo": 1.0,
    "bendiga": 2.0, "salvó": 2.0, "fácil": 1.5, "entendido": 0.8,
    # negative
    "molesto": -2.0, "molesta": -2.0, "molestia": -1.8, "enojado": -2.5, "enojada": -2.5, "harto": -2.5, "harta": -2.5,
    "cansado": -1.5, "cansada": -1.5, "frustrado": -2.3, "frustrada": -2.3, "frustrante": -2.3, "inaceptable": -2.8,
    "ridículo": -2.3, "vergüenza": -2.3, "desastre": -2.8, "pésimo": -3.0, "pésima": -3.0, "terrible": -3.0,
    "horrible": -3.0, "malo": -2.0, "mala": -2.0, "mal": -1.8, "abuso": -2.8, "grosera": -2.3, "grosero": -2.3,
    "inútil": -2.5, "queja": -1.8, "problema": -1.3, "error": -1.5, "dolor": -1.8, "preocupado": -1.5,
    "preocupada": -1.5, "respeto": 1.0, "falta": -1.0, "nunca": -1.0, "nadie": -0.8, "abogado": -1.0,
    "triste": -2.0, "miedo": -2.0, "injusto": -2.5, "lamento": -1.0, "siento": -0.5, "desgracia": -2.5,
}

# --- PHI as spoken in Spanish: (kind, pattern, group), the shape of `redaction._PATTERNS` ---
_NAME = r"[A-ZÁÉÍÓÚÑ][a-záéíóúñü'\u2019-]+(?:\s+(?:de\s+(?:la\s+)?)?[A-ZÁÉÍÓÚÑ][a-záéíóúñü'\u2019-]+)?"
# Capitalised words that follow a name cue without being a name ("soy Yo", "habla Usted").
_NOT_NAME = (r"(?!(?:Yo|Usted|Ustedes|El|La|Los|Las|Un|Una|Mi|Su|Sus|Que|Qué|Para|Por|De|Del|Con|Sí|No|Hola|Buenos"
             r"|Buenas|Gracias|Bueno|Claro|Ok|Pues|Este|Esta|Ese|Esa|Aquí|Muy|Ya|Es|Soy|Señor|Señora|Doctor|Doctora"
             # These patterns run on English calls too (engines/redaction.py): an English turn opens
             # with these words before an identifier ("Thanks, [NAME], ...", "Okay, 3 de mayo").
             r"|Thanks|Thank|Okay|Yes|Yeah|Sure|Hi|Hello|Right|Great|Perfect|Well|So|And|Alright|Sorry|Please)\b)")
_RELATIVE = (r"(?:esposo|esposa|marido|mujer|mamá|papá|madre|padre|hijo|hija|hermano|hermana|tía|tío|suegra|suegro"
             r"|cuñado|cuñada|abuela|abuelo|vecino|vecina|nieto|nieta|primo|prima|sobrino|sobrina|paciente|amigo|amiga"
             r"|novio|novia|nuera|yerno)")
_CUE_GAP = r"(?:\s+(?:número|no\.?|id|#))?(?:\s*(?:es|era|:|#|de|del))?\s*"
_STREET = r"(?:calle|avenida|av\.?|camino|bulevar|paseo|carretera|callejón|plaza|privada|calzada|circuito)"


def phi_patterns(id_pattern: str, numeric_date: str) -> tuple[tuple[str, re.Pattern[str], int], ...]:
    """Spanish cues for the identifiers of `engines/redaction.py`, built on its spoken-id pattern
    (`id_pattern`) and its numeric date (`numeric_date`, "03/04/1988"), which are not language-bound."""
    date = rf"(?:{DATE}|{numeric_date})"
    i = re.IGNORECASE
    return (
        ("DOB", re.compile(fold(r"(?i:\b(?:fecha de nacimiento|fecha de nac\w*|nací|nació|nacid[oa]|cumpleaños)"
                                r"(?:\s+(?:es|era|fue|:))?\s*(?:el\s+)?)(" + date + ")"), i), 1),
        ("DATE", re.compile(DATE, i), 0),
        ("SSN", re.compile(fold(r"(?i:\b(?:seguro social|social)" + _CUE_GAP + r")(\d{9}|\d{4}|\d{3}[- ]\d{2}[- ]\d{4})\b")), 1),
        ("MRN", re.compile(fold(r"(?i:\b(?:expediente|historia clínica)" + _CUE_GAP + r")(" + id_pattern + ")")), 1),
        ("MEMBER_ID", re.compile(fold(r"(?i:\b(?:miembro|afiliad[oa]|socio|póliza|credencial|asegurad[oa])" + _CUE_GAP
                                      + r")(" + id_pattern + ")")), 1),
        ("ACCOUNT", re.compile(fold(r"(?i:\b(?:cuenta|factura|reclamo|reclamación)" + _CUE_GAP + r")(" + id_pattern + ")")), 1),
        ("NAME", re.compile(fold(r"(?i:\b(?:me llamo|mi nombre es|soy|habla|le habla|a nombre de|hablo con|hablo por"
                                 r"|el paciente es|la paciente es)\s+)") + _NOT_NAME + "(" + _NAME + ")"), 1),
        ("NAME", re.compile(fold(r"\b(?i:señor|señora|señorita|sr|sra|srta|don|doña|doctor|doctora|dr|dra)\.?\s+") + _NOT_NAME
                            + "(" + _NAME + ")"), 1),
        ("NAME", re.compile(fold(r"(?i:\b(?:mi|su|tu|la|el|del|de mi|de su)\s+" + _RELATIVE + r"(?:\s+de)?,?\s+)") + _NOT_NAME
                            + "(" + _NAME + ")"), 1),
        # An answer to "¿nombre y fecha de nacimiento?": the name opens the turn, the identifier follows.
        ("NAME", re.compile(r"^(?:(?i:sí|claro|es|soy),?\s+)?" + _NOT_NAME + "(" + _NAME + r")(?=,\s+(?:" + fold(
            r"(?i:\d{1,2} de |(?:el )?" + _DAY + r" de " + MONTHS + r"|nací|nacid[oa]|mi fecha|mi número)") + r"|[A-Z](?:\s[A-Z0-9]){2}|\[))",
            re.M), 1),
        # ... or closes it after the identifier ("B C 6 1 0 9 7 7, Raúl Fuentes.").
        ("NAME", re.compile(r"\d,\s+" + _NOT_NAME + "(" + _NAME + r")\.?\s*$"), 1),
        ("ADDRESS", re.compile(fold(r"\b\d{1,6}\s+(?:de\s+)?(?:la\s+)?" + _STREET + r"\s+(?:de\s+)?(?:los\s+|las\s+|la\s+|el\s+)?"
                                    r"\w+(?:\s+[A-ZÁÉÍÓÚÑ]\w+)?"), i), 0),
        ("ADDRESS", re.compile(fold(r"\b" + _STREET) + r"\s+[A-ZÁÉÍÓÚÑ]\w+(?:\s+[A-ZÁÉÍÓÚÑ]\w+)?,?\s+" + fold(
                                    r"(?:número\s+|#\s*)?\d{1,6}\b"), i), 0),
        ("ADDRESS", re.compile(fold(r"(?i:\b(?:vive|vivo|viven|vivimos|registrad[oa]|domicilio|dirección)(?:\s+\w+){0,2}\s+en\s+"
                                    r"(?:el\s+)?)(\d{1,6}(?:\s+\w+){1,3})")), 1),
        ("ZIP", re.compile(fold(r"(?i:\bcódigo postal" + _CUE_GAP + r")(\d{5})\b")), 1),
        ("PHONE", re.compile(rf"(?i:\b{DIGIT_WORDS}(?:[\s,.-]+{DIGIT_WORDS}){{9,}}\b)"), 0),
        ("ID", re.compile(rf"(?i:\b{DIGIT_WORDS}(?:[\s,.-]+{DIGIT_WORDS}){{3,}}\b)"), 0),
    )
