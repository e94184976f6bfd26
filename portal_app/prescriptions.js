/* The Prescriptions page (docs/portal-app.md, "Prescriptions"): each order with what the
   server says may be done with it (the eligibility extension it adds to every
   MedicationRequest it returns), a refill with a pharmacy choice ($refill, pharmacies from
   the directory), a renewal with an optional note ($renew), and each request's state (its
   Task and the pharmacy's MedicationDispense). Uses app.js's helpers. */
"use strict";

const ELIGIBILITY_URL = "https://mhs.example.org/fhir/StructureDefinition/medication-eligibility";
// Pharmacies are Locations typed with the HL7 v3 role code PHARM (a standard code, not ours).
const PHARMACY_TYPE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode|PHARM";
const RX_TASK_SYSTEM = "https://mhs.example.org/fhir/CodeSystem/portal-task";

const RX_TASK_WORDS = {
  draft: "not sent yet",
  requested: "sent, waiting to be looked at",
  received: "received",
  accepted: "accepted",
  ready: "ready to be worked on",
  "in-progress": "being prepared",
  "on-hold": "on hold",
  completed: "done",
  rejected: "declined",
  cancelled: "cancelled",
  failed: "could not be done",
  "entered-in-error": "entered in error",
};
const DISPENSE_WORDS = { preparation: "being prepared", "in-progress": "being prepared", completed: "handed over", cancelled: "cancelled",
  "on-hold": "on hold", stopped: "stopped", declined: "declined", unknown: "state unknown", "entered-in-error": "entered in error" };

function eligibility(m) {
  const ext = (m.extension || []).find((e) => e.url === ELIGIBILITY_URL);
  const part = (name) => ((ext && ext.extension) || []).find((e) => e.url === name) || {};
  return { kind: part("eligibility").valueCode || "none", reason: (part("reason").valueCoding || {}).display || "",
    left: part("refillsRemaining").valueUnsignedInt };
}
function medName(m) { return cc(m.medicationCodeableConcept) || (m.medicationReference || {}).display || "medication"; }
function taskKind(t) {
  const code = ((t.code || {}).coding || []).find((c) => c.system === RX_TASK_SYSTEM);
  if (code) return code.code === "refill-request" ? "Refill request" : code.code === "renewal-request" ? "Renewal request" : cc(t.code);
  return cc(t.code) || "Request";
}

async function prescriptions() {
  const head = [h("h1", {}, `Prescriptions: ${nameOf(state.current)}`), takeFlash(), bandNote()];
  if (!allowed("MedicationRequest", "s")) return [...head, section("Prescriptions", missing(whyMissing("MedicationRequest")))];
  const p = pid();
  const canAsk = allowed("MedicationRequest", "c") && allowed("Task", "c");
  let all, tasks, dispenses, pharmacies = [], pharmacyError = null;
  const owners = new Map();  // who each request went to (the pharmacy, the PCM), by reference
  try {
    [all, tasks, dispenses] = await Promise.all([
      search(`MedicationRequest?patient=${p}&_count=100`),
      allowed("Task", "s") ? search(`Task?patient=${p}&_include=Task:owner&_count=100`, owners) : [],
      searchIf("MedicationDispense", `MedicationDispense?patient=${p}&_count=100`),
    ]);
  } catch (err) { return [...head, section("Prescriptions", errorBox(err, "prescriptions"))]; }
  if (canAsk) {
    try { pharmacies = await search(`Location?type=${encodeURIComponent(PHARMACY_TYPE)}&_count=50`); }
    catch (err) { pharmacyError = err; }
  }
  const orders = all.filter((m) => m.intent === "order");
  if (!orders.length) return [...head, section("Prescriptions", h("p", {}, "No prescriptions."))];
  // A renewal's Task focuses the proposal (a MedicationRequest whose priorPrescription is the
  // order); a refill's Task focuses the order itself.
  const orderOf = new Map(all.map((m) => [`MedicationRequest/${m.id}`, m.intent === "order" ? m.id : String((m.priorPrescription || {}).reference || "").replace("MedicationRequest/", "")]));
  const requestsOf = (id) => tasks.filter((t) => orderOf.get((t.focus || {}).reference) === id)
    .sort((a, b) => String(b.authoredOn || "").localeCompare(String(a.authoredOn || "")));
  const pharmacyName = new Map(pharmacies.map((l) => [`Location/${l.id}`, l.name]));
  return [...head, section("Prescriptions", h("ul", { class: "plain" }, orders.map((m) => {
    const e = eligibility(m);
    const valid = m.dispenseRequest && m.dispenseRequest.validityPeriod && m.dispenseRequest.validityPeriod.end;
    const mine = requestsOf(m.id);
    const fills = dispenses.filter((d) => (d.authorizingPrescription || []).some((r) => r.reference === `MedicationRequest/${m.id}`));
    const what = { refillable: "You can request a refill", renewable: "You can ask your doctor to renew it", none: "It cannot be refilled or renewed online" }[e.kind] || "";
    return h("li", { class: "card", "data-prescription": m.id, "data-eligibility": e.kind },
      h("strong", {}, medName(m)), ` (${m.status})`,
      ((m.dosageInstruction || [])[0] || {}).text ? h("p", {}, m.dosageInstruction[0].text) : null,
      h("p", {}, `${what}${e.reason ? `: ${e.reason}` : ""}.`,
        e.left !== undefined ? ` Refills left: ${e.left}.` : "", valid ? ` Valid until ${when(valid)}.` : ""),
      !canAsk ? (e.kind !== "none" ? h("p", { class: "note" }, "Your sign-in cannot request refills or renewals.") : null)
        : e.kind === "refillable" ? refillForm(m, pharmacies, pharmacyError, lastPharmacy(mine, fills))
          : e.kind === "renewable" ? renewForm(m) : null,
      mine.length || fills.length ? h("div", {}, h("h3", {}, "Requests and fills"), h("ul", {},
        mine.map((t) => h("li", { "data-task": t.id, "data-status": t.status }, `${taskKind(t)}, sent ${when(t.authoredOn)}`,
          t.owner ? ` to ${pharmacyName.get(t.owner.reference) || t.owner.display || ownerName(owners.get(t.owner.reference)) || "the care team"}` : "",
          `: ${RX_TASK_WORDS[t.status] || t.status}`, t.businessStatus ? ` – ${cc(t.businessStatus)}` : "",
          t.statusReason ? ` – ${cc(t.statusReason)}` : "", ".")),
        fills.map((d) => h("li", {}, `Pharmacy fill${d.quantity ? ` of ${quantity(d.quantity)}` : ""}: ${DISPENSE_WORDS[d.status] || d.status}`,
          d.whenHandedOver ? ` on ${when(d.whenHandedOver)}` : d.whenPrepared ? `, prepared ${when(d.whenPrepared)}` : "", ".")))) : null);
  })))];
}

/** A Practitioner's or a Location's name (an included Task owner). */
function ownerName(res) {
  if (!res) return "";
  if (res.resourceType !== "Practitioner") return res.name || "";
  const n = (res.name || [])[0] || {};
  const full = [...(n.prefix || []), ...(n.given || []), n.family].filter(Boolean).join(" ");
  return n.text || [full, ...(n.suffix || [])].filter(Boolean).join(", ") || nameOf(res);
}
/** The pharmacy chosen last time for this prescription (its newest refill, else its newest fill). */
function lastPharmacy(requests, fills) {
  const refill = requests.find((t) => taskKind(t) === "Refill request" && t.owner);
  const fill = fills.slice().sort((a, b) => String(b.whenHandedOver || "").localeCompare(String(a.whenHandedOver || "")))
    .find((d) => d.location);
  return (refill && refill.owner.reference) || (fill && fill.location.reference) || null;
}

function refillForm(m, pharmacies, pharmacyError, preferred) {
  if (pharmacyError) return errorBox(pharmacyError, "the list of pharmacies");
  if (!pharmacies.length) return missing("No pharmacy is listed on this server, so a refill cannot be requested online; call the pharmacy.");
  const id = `pharmacy-${m.id}`;
  const status = h("div", { role: "status" });
  const send = async (e) => {
    e.preventDefault();
    const where = document.getElementById(id).value;
    status.replaceChildren("Sending…");
    try {
      const task = await post(`MedicationRequest/${m.id}/$refill`, parameters(["pharmacy", "valueReference", { reference: where }]));
      flash(`Refill of ${medName(m)} requested at ${(pharmacies.find((l) => `Location/${l.id}` === where) || {}).name || "the pharmacy"}: ${RX_TASK_WORDS[(task || {}).status] || "sent"}.`);
      go("#prescriptions");
    } catch (err) { status.replaceChildren(errorBox(err, `the refill of ${medName(m)}`)); }
  };
  return h("form", { onsubmit: send }, h("label", { for: id }, `Pharmacy to pick up ${medName(m)}`),
    h("select", { id }, pharmacies.map((l) => h("option", { value: `Location/${l.id}`, selected: preferred === `Location/${l.id}` }, l.name || l.id))),
    h("p", {}, h("button", { type: "submit" }, `Request a refill of ${medName(m)}`)), status);
}

function renewForm(m) {
  const id = `note-${m.id}`;
  const status = h("div", { role: "status" });
  const send = async (e) => {
    e.preventDefault();
    status.replaceChildren("Sending…");
    try {
      await post(`MedicationRequest/${m.id}/$renew`, parameters(["note", "valueString", document.getElementById(id).value.trim()]));
      flash(`Renewal of ${medName(m)} requested: your doctor will decide.`);
      go("#prescriptions");
    } catch (err) { status.replaceChildren(errorBox(err, `the renewal of ${medName(m)}`)); }
  };
  return h("form", { onsubmit: send }, h("label", { for: id }, `Note for your doctor about ${medName(m)} (optional)`), h("textarea", { id }),
    h("p", {}, h("button", { type: "submit" }, `Request a renewal of ${medName(m)}`)), status);
}
