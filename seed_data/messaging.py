"""Secure-message threads between patients (or their proxies) and care teams.

A thread is a header Communication (``status`` in-progress, ``topic``, a coded ``category``
from profiles/portal/messaging.json, ``subject`` the patient, ``recipient`` the team or
pool, no payload) and its messages, each ``partOf`` the header; a reply names the message
it answers (``inResponseTo``). A patient writes to their care team or the clinic's nurse
pool (``recipient`` = the CareTeam); a clinician answers the patient, or the proxy who
wrote (a RelatedPerson). A message that has been read carries ``received``; one that has
not (the nurse pool's inbox) does not. The header keeps the thread's first message's
id without the ``-1`` (``msg-sophia-followup`` heads ``msg-sophia-followup-1`` ...).
"""

from __future__ import annotations

from dataclasses import dataclass

from seed_data.common import Clock, Json, concept, ref, stamp, text_attachment
from seed_data.directory import (
    CLINIC_NURSE_POOL,
    NURSE_POOLS,
    PEOPLE,
    care_team_ref,
    clinician_ref,
    patient_ref,
    related_person_ref,
)

CATEGORY = "http://terminology.hl7.org/CodeSystem/communication-category"
# The thread categories of profiles/portal/messaging.json.
THREAD_CATEGORY = "https://mhs.example.org/fhir/CodeSystem/message-category"
THREAD_CATEGORIES = {
    "medical-question": "Medical question",
    "medication": "Medication question",
    "test-results": "Test results",
    "forms": "Forms and letters",
}
# The message left unanswered and unread in the Family Medicine nurse pool's inbox, sent
# this many days before seeding: past its three business days of response time.
OVERDUE_DAYS = 10


@dataclass(frozen=True)
class Message:
    sender: Json
    recipient: Json
    offset: int
    hhmm: str
    text: str
    attachment: tuple[str, str] | None = None  # (title, text) of a small text file
    read: bool = True  # the recipient has read it (``received`` set)


@dataclass(frozen=True)
class Thread:
    id: str  # the header's id; messages are ``<id>-1``, ``<id>-2`` ...
    patient: str
    topic: str
    category: str  # a code of THREAD_CATEGORIES
    messages: tuple[Message, ...]


def nurse_pool_ref(patient: str) -> Json:
    pool = CLINIC_NURSE_POOL[PEOPLE[patient].clinic]
    return ref("CareTeam", pool, NURSE_POOLS[pool][0])


def threads() -> tuple[Thread, ...]:
    maria_for_liam = related_person_ref("maria", "liam")
    susan = related_person_ref("susan", "eleanor")
    return (
        Thread(
            "msg-james-cholesterol",
            "james",
            "Question about my cholesterol results",
            "test-results",
            (
                Message(
                    patient_ref("james"),
                    care_team_ref("james"),
                    -40,
                    "19:12",
                    "I saw my LDL came back at 138. Should I change my statin dose before the "
                    "follow-up?",
                ),
                Message(
                    clinician_ref("jessica"),
                    patient_ref("james"),
                    -39,
                    "09:40",
                    "Dr. Kim reviewed your results. Keep taking atorvastatin 20 mg at bedtime; "
                    "she will discuss the dose at your follow-up. Please come fasting.",
                ),
                Message(
                    patient_ref("james"), care_team_ref("james"), -39, "12:03", "Thanks, will do."
                ),
            ),
        ),
        Thread(
            "msg-liam-sports-form",
            "liam",
            "School sports physical form",
            "forms",
            (
                Message(
                    maria_for_liam,
                    care_team_ref("liam"),
                    -10,
                    "08:20",
                    "Liam's school needs his sports clearance form before soccer starts. Could "
                    "you send it?",
                ),
                Message(
                    clinician_ref("rachel"),
                    maria_for_liam,
                    -9,
                    "13:45",
                    "Attached is Liam's sports clearance from his well-child visit. Please "
                    "make sure his epinephrine auto-injector goes to every practice.",
                    (
                        "sports-clearance-liam-carter.txt",
                        "SPORTS PARTICIPATION CLEARANCE\nStudent: Liam Thomas Carter\n"
                        "Cleared for: all sports, no restrictions.\nAllergy: peanut (carries "
                        "epinephrine auto-injector).\nSigned: Rachel Kim, MD, Lakeside MMC "
                        "Family Medicine\n",
                    ),
                ),
            ),
        ),
        Thread(
            "msg-sophia-followup",
            "sophia",
            "Question after my visit",
            "medical-question",
            (
                Message(
                    patient_ref("sophia"),
                    care_team_ref("sophia"),
                    -20,
                    "21:30",
                    "Hi, can my next appointment be after school? And do I need to repeat the "
                    "test?",
                ),
                Message(
                    clinician_ref("rachel"),
                    patient_ref("sophia"),
                    -19,
                    "10:05",
                    "Yes, afternoon appointments work. A repeat test is recommended in three "
                    "months; we can do it at your next visit. This conversation stays "
                    "confidential.",
                ),
                Message(
                    patient_ref("sophia"), care_team_ref("sophia"), -19, "16:40", "Ok, thank you!"
                ),
            ),
        ),
        Thread(
            "msg-eleanor-medications",
            "eleanor",
            "Mom's medication list",
            "medication",
            (
                Message(
                    susan,
                    care_team_ref("eleanor"),
                    -15,
                    "11:00",
                    "Could you confirm Mom's current medication list for her pill organizer?",
                ),
                Message(
                    clinician_ref("tamika"),
                    susan,
                    -14,
                    "08:45",
                    "Current list: apixaban 5 mg twice daily, and alendronate 10 mg every "
                    "morning with water 30 minutes before food. No changes at the last visit.",
                ),
            ),
        ),
        Thread(
            "msg-marcus-profile",
            "marcus",
            "Profile and return to duty",
            "medical-question",
            (
                Message(
                    patient_ref("marcus"),
                    nurse_pool_ref("marcus"),
                    -5,
                    "06:30",
                    "My unit is asking when my profile ends. Can I start running again?",
                ),
                Message(
                    clinician_ref("laura"),
                    patient_ref("marcus"),
                    -4,
                    "10:10",
                    "Your temporary profile runs 21 days from your visit. I have asked for a "
                    "recheck; please book it when you get the confirmation.",
                ),
            ),
        ),
        Thread(
            "msg-emma-allergy",
            "emma",
            "Allergy medicine",
            "medication",
            (
                Message(
                    patient_ref("emma"),
                    care_team_ref("emma"),
                    -12,
                    "17:45",
                    "Is it fine to take my cetirizine every day while I'm at school in "
                    "another state?",
                ),
                Message(
                    clinician_ref("carlos"),
                    patient_ref("emma"),
                    -11,
                    "09:15",
                    "Yes, daily use is fine. Your prescription has refills through the season; "
                    "you can request them from any military pharmacy.",
                ),
            ),
        ),
        Thread(
            "msg-karen-travel",
            "karen",
            "Vaccines before deployment travel",
            "medical-question",
            (
                Message(
                    patient_ref("karen"),
                    nurse_pool_ref("karen"),
                    -OVERDUE_DAYS,
                    "09:15",
                    "I leave for a two-week reserve training abroad next month. Which "
                    "vaccines or boosters do I need before I go?",
                    read=False,
                ),
            ),
        ),
    )


def build(clock: Clock) -> list[Json]:
    out: list[Json] = []
    for t in threads():
        out.append(header(clock, t))
        for n, message in enumerate(t.messages, start=1):
            out.append(communication(clock, t, n, message))
    return out


def header(clock: Clock, t: Thread) -> Json:
    """The thread's header: who started it, to whom, about what; no payload."""
    first = t.messages[0]
    return {
        "resourceType": "Communication",
        "id": t.id,
        "status": "in-progress",
        "category": [concept(THREAD_CATEGORY, t.category, THREAD_CATEGORIES[t.category])],
        "subject": patient_ref(t.patient),
        "topic": {"text": t.topic},
        # A minute before its first message: the thread is started, then written in.
        "sent": stamp(clock.day(first.offset), first.hhmm, -1),
        "recipient": [first.recipient],
        "sender": first.sender,
    }


def communication(clock: Clock, t: Thread, n: int, m: Message) -> Json:
    from_clinician = m.sender["reference"].startswith("Practitioner/")
    # Messages are written any day of the week, so no move to a clinic day here.
    sent = stamp(clock.day(m.offset), m.hhmm)
    res: Json = {
        "resourceType": "Communication",
        "id": f"{t.id}-{n}",
        "partOf": [ref("Communication", t.id)],
    }
    if n > 1:
        res["inResponseTo"] = [ref("Communication", f"{t.id}-{n - 1}")]
    res |= {
        "status": "completed",
        "category": [
            concept(CATEGORY, "instruction", "Instruction")
            if from_clinician
            else concept(CATEGORY, "notification", "Notification")
        ],
        "priority": "routine",
        "subject": patient_ref(t.patient),
        "topic": {"text": t.topic},
        "sent": sent,
    }
    if m.read:
        res["received"] = stamp(clock.day(m.offset), m.hhmm, 1)
    res |= {
        "recipient": [m.recipient],
        "sender": m.sender,
        "payload": [{"contentString": m.text}],
    }
    if m.attachment:
        title, body = m.attachment
        res["payload"].append({"contentAttachment": text_attachment(body, title, sent)})
    return res
