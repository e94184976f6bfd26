"""Secure-message threads between patients (or their proxies) and care teams.

A thread is a chain of Communications: every reply points at the message it answers
(``inResponseTo``) and at the thread's first message (``partOf``); all share ``topic``.
A patient writes to their care team (``recipient`` = the CareTeam); a clinician answers the
patient, or the proxy who wrote (a RelatedPerson).
"""

from __future__ import annotations

from dataclasses import dataclass

from seed_data.common import Clock, Json, concept, ref, stamp, text_attachment
from seed_data.directory import care_team_ref, clinician_ref, patient_ref, related_person_ref

CATEGORY = "http://terminology.hl7.org/CodeSystem/communication-category"


@dataclass(frozen=True)
class Message:
    sender: Json
    recipient: Json
    offset: int
    hhmm: str
    text: str
    attachment: tuple[str, str] | None = None  # (title, text) of a small text file


def threads() -> tuple[tuple[str, str, str, tuple[Message, ...]], ...]:
    """(root id, patient key, topic, messages)."""
    maria_for_liam = related_person_ref("maria", "liam")
    susan = related_person_ref("susan", "eleanor")
    return (
        (
            "msg-james-cholesterol",
            "james",
            "Question about my cholesterol results",
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
        (
            "msg-liam-sports-form",
            "liam",
            "School sports physical form",
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
        (
            "msg-sophia-followup",
            "sophia",
            "Question after my visit",
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
        (
            "msg-eleanor-medications",
            "eleanor",
            "Mom's medication list",
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
        (
            "msg-marcus-profile",
            "marcus",
            "Profile and return to duty",
            (
                Message(
                    patient_ref("marcus"),
                    care_team_ref("marcus"),
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
        (
            "msg-emma-allergy",
            "emma",
            "Allergy medicine",
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
    )


def build(clock: Clock) -> list[Json]:
    out: list[Json] = []
    for root_id, patient, topic, messages in threads():
        for n, message in enumerate(messages, start=1):
            out.append(communication(clock, root_id, n, patient, topic, message))
    return out


def communication(clock: Clock, root_id: str, n: int, patient: str, topic: str, m: Message) -> Json:
    from_clinician = m.sender["reference"].startswith("Practitioner/")
    # Messages are written any day of the week, so no move to a clinic day here.
    sent = stamp(clock.day(m.offset), m.hhmm)
    res: Json = {
        "resourceType": "Communication",
        "id": f"{root_id}-{n}",
    }
    if n > 1:
        res["partOf"] = [ref("Communication", f"{root_id}-1")]
        res["inResponseTo"] = [ref("Communication", f"{root_id}-{n - 1}")]
    res |= {
        "status": "completed",
        "category": [
            concept(CATEGORY, "instruction", "Instruction")
            if from_clinician
            else concept(CATEGORY, "notification", "Notification")
        ],
        "priority": "routine",
        "subject": patient_ref(patient),
        "topic": {"text": topic},
        "sent": sent,
        "received": stamp(clock.day(m.offset), m.hhmm, 1),
        "recipient": [m.recipient],
        "sender": m.sender,
        "payload": [{"contentString": m.text}],
    }
    if m.attachment:
        title, body = m.attachment
        res["payload"].append({"contentAttachment": text_attachment(body, title, sent)})
    return res
