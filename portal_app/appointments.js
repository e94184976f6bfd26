/* The Appointments page (docs/portal-app.md, "Appointments"): upcoming and past visits, the
   requests and their state, the pre-visit clipboards, finding and booking a free time
   ($find, $book), moving a booking ($reschedule), cancelling ($cancel) and requesting a visit
   (POST of a proposed Appointment). Every rule (who may book what, lead times, request-only
   visit types, an adolescent's confidential visits) is the server's: the app offers the
   clinic's catalogue and shows the server's answer in plain words. Uses app.js's helpers. */
"use strict";

// The visit types are the codings of this system on the clinics' Slots (docs/portal.md,
// "Appointments"); clipboard and request Tasks carry these codes.
const VISIT_TYPE_SYSTEM = "https://mhs.example.org/fhir/CodeSystem/visit-type";
const PORTAL_TASK_SYSTEM = "https://mhs.example.org/fhir/CodeSystem/portal-task";
const CLIPBOARD_CODE = `${PORTAL_TASK_SYSTEM}|complete-questionnaire`;
const REQUEST_CODE = `${PORTAL_TASK_SYSTEM}|appointment-request`;

const APPT_WORDS = {
  proposed: "requested: waiting for the clinic to offer a time",
  pending: "held for you, not booked yet",
  booked: "booked",
  arrived: "checked in",
  "checked-in": "checked in",
  fulfilled: "attended",
  cancelled: "cancelled",
  noshow: "missed",
  waitlist: "on the waiting list",
  "entered-in-error": "entered in error",
};
const REQUEST_WORDS = {
  requested: "sent to the clinic's scheduling team",
  received: "received by the clinic",
  accepted: "accepted by the clinic: a time will be offered",
  ready: "being arranged by the clinic",
  "in-progress": "being arranged by the clinic",
  "on-hold": "on hold at the clinic",
  completed: "answered: the clinic booked a time",
  rejected: "declined by the clinic",
  cancelled: "withdrawn",
  failed: "could not be arranged",
};

function visitType(a) {
  for (const c of a.serviceType || []) for (const x of c.coding || []) if (x.system === VISIT_TYPE_SYSTEM) return x;
  return null;
}
function visitName(a) {
  const vt = visitType(a);
  return a.description || (vt && vt.display) || cc((a.serviceType || [])[0]) || "appointment";
}
function actorOf(a, type) {
  const p = (a.participant || []).find((x) => x.actor && String(x.actor.reference || "").startsWith(`${type}/`));
  return p ? p.actor : null;
}
function placeOf(a) {
  const who = actorOf(a, "Practitioner"), where = actorOf(a, "Location");
  return [who && who.display, where && where.display].filter(Boolean).join(", ");
}
function period(p) {
  if (!p) return "";
  return p.start && p.end ? `between ${when(p.start)} and ${when(p.end)}` : p.start ? `from ${when(p.start)}` : p.end ? `until ${when(p.end)}` : "";
}

/** The clinics and their visit types, from the directory (Schedules and one Slot of each):
    what any app can read, loaded once per sign-in. */
async function catalogue() {
  if (state.catalogue) return state.catalogue;
  const schedules = (await search("Schedule?_count=50")).filter((s) => s.active !== false);
  const clinics = new Map();
  await Promise.all(schedules.map(async (s) => {
    const slots = await api(`Slot?schedule=Schedule/${s.id}&_count=1`);
    const slot = ((slots.entry || [])[0] || {}).resource;
    const where = (s.actor || []).find((a) => String(a.reference || "").startsWith("Location/"));
    if (!slot || !where) return;
    const clinic = clinics.get(where.reference) || { ref: where.reference, name: where.display || "clinic", types: new Map() };
    for (const c of slot.serviceType || []) for (const x of c.coding || []) if (x.system === VISIT_TYPE_SYSTEM) clinic.types.set(x.code, x.display || x.code);
    clinics.set(where.reference, clinic);
  }));
  state.catalogue = [...clinics.values()].filter((c) => c.types.size).sort((a, b) => a.name.localeCompare(b.name));
  return state.catalogue;
}

/** A clinic select and a visit-type select that follows it; `any` adds "any" choices. */
function clinicAndType(prefix, clinics, any, chosen) {
  const typeSel = h("select", { id: `${prefix}-type` });
  const fill = () => {
    const c = clinics.find((x) => x.ref === clinicSel.value);
    const types = c ? [...c.types] : [...new Map(clinics.flatMap((x) => [...x.types])).entries()];
    typeSel.replaceChildren(...(any ? [h("option", { value: "" }, "Any visit type")] : []),
      ...types.map(([code, name]) => h("option", { value: code, selected: chosen && chosen.type === code }, name)));
  };
  const clinicSel = h("select", { id: `${prefix}-clinic`, onchange: fill },
    ...(any ? [h("option", { value: "" }, "Any clinic")] : []),
    ...clinics.map((c) => h("option", { value: c.ref, selected: chosen && chosen.clinic === c.ref }, c.name)));
  fill();
  return [h("label", { for: `${prefix}-clinic` }, "Clinic"), clinicSel, h("label", { for: `${prefix}-type` }, "Kind of visit"), typeSel];
}

// ---------------------------------------------------------------- the page
async function appointments() {
  const [, view, id] = location.hash.split("/");
  const safe = (id || "").replace(/[^A-Za-z0-9\-.]/g, "");
  if (view === "reschedule" && safe) return reschedulePage(safe);
  if (view === "clipboard" && safe) return clipboardPage(safe);
  const p = pid();
  const today = new Date().toISOString().slice(0, 10);
  const canWrite = allowed("Appointment", "c");
  let list = [], clipboards = [], requests = [], failed = null;
  if (allowed("Appointment", "s")) {
    try {
      [list, clipboards, requests] = await Promise.all([
        search(`Appointment?patient=${p}&_sort=date&_count=100`),
        searchIf("Task", `Task?patient=${p}&code=${encodeURIComponent(CLIPBOARD_CODE)}&_count=100`),
        searchIf("Task", `Task?patient=${p}&code=${encodeURIComponent(REQUEST_CODE)}&_count=100`),
      ]);
    } catch (err) { failed = err; }
  }
  const head = [h("h1", {}, `Appointments: ${nameOf(state.current)}`), takeFlash(), bandNote()];
  if (!allowed("Appointment", "s")) return [...head, section("Your appointments", missing(whyMissing("Appointment")))];
  if (failed) return [...head, section("Your appointments", errorBox(failed, "appointments"))];

  const clipboardOf = new Map();
  for (const t of clipboards) {
    const appt = ((t.basedOn || [])[0] || {}).reference || ((t.focus || {}).reference || "");
    if (appt.startsWith("Appointment/")) clipboardOf.set(appt, t);
  }
  const requestOf = new Map(requests.map((t) => [(t.focus || {}).reference, t]));
  const upcoming = list.filter((a) => ["booked", "pending", "proposed", "arrived", "checked-in", "waitlist"].includes(a.status) && (!a.start || a.start.slice(0, 10) >= today));
  const past = list.filter((a) => !upcoming.includes(a));
  const asked = list.filter((a) => (a.requestedPeriod || []).length);

  const card = (a) => {
    const clip = clipboardOf.get(`Appointment/${a.id}`);
    const actions = [];
    if (canWrite && a.status === "booked") {
      actions.push(h("a", { href: `#appointments/reschedule/${a.id}`, class: "action" }, `Move this appointment`));
      actions.push(confirmButton("Cancel this appointment", "Cancel this appointment? The time is given back to the clinic.", "Yes, cancel it",
        async (why) => { await post(`Appointment/${a.id}/$cancel`, parameters(["reason", "valueString", why || "cancelled by the patient in the portal"])); flash(`Cancelled: ${visitName(a)} on ${when(a.start)}.`); go("#appointments"); },
        "Reason (optional)", "cancelling this appointment"));
    }
    if (canWrite && ["proposed", "pending"].includes(a.status)) {
      actions.push(confirmButton(a.status === "proposed" ? "Withdraw this request" : "Let this time go", "The clinic will no longer arrange it.", "Yes, withdraw it",
        async () => { await post(`Appointment/${a.id}/$cancel`, parameters(["reason", "valueString", "withdrawn by the patient in the portal"])); flash(`Withdrawn: ${visitName(a)}.`); go("#appointments"); }, null, "withdrawing this request"));
    }
    return h("li", { class: "card", "data-appointment": a.id, "data-status": a.status },
      h("strong", {}, visitName(a)), h("br"),
      a.start ? `${when(a.start)}${a.minutesDuration ? ` (${a.minutesDuration} minutes)` : ""}` : `Not scheduled yet; wanted ${period((a.requestedPeriod || [])[0]) || "soon"}`,
      placeOf(a) ? h("br") : null, placeOf(a),
      h("p", { class: "status" }, `Status: ${APPT_WORDS[a.status] || a.status}`),
      clip ? clipboardLine(clip) : null,
      actions.length ? h("div", {}, actions) : null);
  };

  const blocks = [
    section("Upcoming and requested", upcoming.length ? h("ul", { class: "plain" }, upcoming.map(card)) : h("p", {}, "No upcoming appointments.")),
    section("Your appointment requests", asked.length ? h("ul", { class: "plain" }, asked.map((a) => requestLine(a, requestOf.get(`Appointment/${a.id}`))))
      : h("p", {}, "No requests. If no free time fits, or a kind of visit is booked by the clinic itself, send a request below.")),
    section("Pre-visit clipboards", clipboards.length ? h("ul", { class: "plain" }, clipboards.map((t) => h("li", { class: "card" },
      clipboardLine(t, list.find((a) => clipboardOf.get(`Appointment/${a.id}`) === t))))) : h("p", {}, "No clipboards to fill in.")),
  ];
  if (canWrite) {
    let clinics = [];
    let dirError = null;
    try { clinics = await catalogue(); } catch (err) { dirError = err; }
    blocks.push(section("Find and book a free time", dirError ? errorBox(dirError, "the list of clinics") : findForm(clinics)));
    blocks.push(section("Request an appointment", dirError ? errorBox(dirError, "the list of clinics") : requestForm(clinics)));
  } else {
    blocks.push(section("Book or request an appointment", missing(whyMissing("Appointment").replace("does not include appointments", "can show appointments but cannot book, request, move or cancel them"))));
  }
  blocks.push(section("Past and cancelled", past.length ? table(["When", "What", "Status"], past.slice().reverse().map((a) => [when(a.start) || "never scheduled",
    visitName(a), `${APPT_WORDS[a.status] || a.status}${a.cancelationReason ? ` (${cc(a.cancelationReason)})` : ""}`])) : h("p", {}, "None.")));
  return [...head, ...blocks];
}

function clipboardLine(t, appt) {
  const due = t.executionPeriod && t.executionPeriod.end;
  const about = appt ? ` for ${visitName(appt)} on ${when(appt.start)}` : "";
  if (t.status === "completed") {
    return h("p", { class: "clip", "data-clipboard": "completed" }, `Clipboard${about}: completed ${when(t.lastModified) ? `on ${when(t.lastModified)}` : ""}. `,
      h("a", { href: `#appointments/clipboard/${t.id}` }, "See your answers"));
  }
  if (["cancelled", "rejected", "failed", "entered-in-error"].includes(t.status)) {
    return h("p", { class: "clip note", "data-clipboard": t.status }, `Clipboard${about}: no longer needed.`);
  }
  const verb = t.status === "in-progress" ? "Finish the clipboard" : "Fill in the clipboard";
  return h("p", { class: "clip", "data-clipboard": "open" }, `Clipboard${about}: ${t.status === "in-progress" ? "started, not sent yet" : "to fill in"}${due ? ` before ${when(due)}` : ""}. `,
    allowed("QuestionnaireResponse", "c") ? h("a", { href: `#appointments/clipboard/${t.id}` }, verb) : "Your sign-in cannot fill it in.");
}

function requestLine(a, task) {
  let state_ = task ? REQUEST_WORDS[task.status] || task.status : APPT_WORDS[a.status] || a.status;
  if (!task && a.status === "booked") state_ = REQUEST_WORDS.completed;
  if (!task && a.status === "cancelled") state_ = a.cancelationReason ? REQUEST_WORDS.rejected : REQUEST_WORDS.cancelled;
  const why = (task && task.statusReason && cc(task.statusReason)) || (a.status === "cancelled" && a.cancelationReason && cc(a.cancelationReason));
  const reason = (a.reasonCode || []).map(cc).filter(Boolean).join(", ") || a.comment || a.description || "";
  return h("li", { class: "card", "data-request": a.id, "data-status": a.status },
    h("strong", {}, visitName(a)), reason && reason !== visitName(a) ? ` – ${reason}` : "", h("br"),
    `Wanted ${period((a.requestedPeriod || [])[0]) || "soon"}${actorOf(a, "Location") ? ` at ${actorOf(a, "Location").display || "the clinic"}` : ""}.`,
    a.created ? ` Sent ${when(a.created)}.` : "",
    h("p", { class: "status" }, `State: ${state_}${why ? ` – ${why}` : ""}${a.status === "booked" && a.start ? `; booked for ${when(a.start)}` : ""}.`));
}

// ---------------------------------------------------------------- find and book, move
/** The free times $find offers; `choose(offer, button)` books or moves to one. */
function offersForm(prefix, clinics, chosen, buttonWords, doing, choose) {
  const results = h("div", { "aria-live": "polite" });
  const run = async (e) => {
    e.preventDefault();
    results.replaceChildren("Searching…");
    const clinic = document.getElementById(`${prefix}-clinic`).value;
    const type = document.getElementById(`${prefix}-type`).value;
    const start = document.getElementById(`${prefix}-from`).value;
    const q = [`patient=${pid()}`, "_count=10", start ? `start=${start}` : "", clinic ? `location=${encodeURIComponent(clinic)}` : "",
      type ? `service-type=${encodeURIComponent(`${VISIT_TYPE_SYSTEM}|${type}`)}` : ""].filter(Boolean).join("&");
    try {
      const bundle = await api(`Appointment/$find?${q}`);
      const offers = (bundle.entry || []).map((x) => x.resource).filter((r) => r && r.resourceType === "Appointment");
      if (!offers.length) {
        results.replaceChildren(h("p", {}, "No free times found for this choice. Try another date, clinic or kind of visit, or send a request below: some visits are booked only by the clinic."));
        return;
      }
      results.replaceChildren(h("ul", { class: "plain" }, offers.map((o) => h("li", { class: "card" },
        h("strong", {}, when(o.start)), ` – ${visitName(o)}`, placeOf(o) ? h("br") : null, placeOf(o), h("br"),
        h("button", { type: "button", onclick: async (ev) => {
          ev.target.disabled = true;
          try { await choose(o); } catch (err) { ev.target.disabled = false; ev.target.after(errorBox(err, doing)); }
        } }, buttonWords)))));
    } catch (err) {
      results.replaceChildren(errorBox(err, "free appointment times"));
    }
  };
  return h("form", { onsubmit: run }, ...clinicAndType(prefix, clinics, true, chosen),
    h("label", { for: `${prefix}-from` }, "From date"), h("input", { id: `${prefix}-from`, type: "date" }),
    h("p", {}, h("button", { type: "submit" }, "Find free times")), results);
}

function findForm(clinics) {
  return offersForm("find", clinics, null, "Book this time", "booking this time", async (o) => {
    const booked = await post("Appointment/$book", o);
    flash(`Booked: ${visitName(booked || o)} on ${when((booked || o).start)}.`);
    go("#appointments");
  });
}

async function reschedulePage(id) {
  const back = h("p", {}, h("a", { href: "#appointments" }, "Back to appointments"));
  let appt, clinics;
  try { [appt, clinics] = await Promise.all([api(`Appointment/${id}`), catalogue()]); }
  catch (err) { return [h("h1", {}, "Move an appointment"), errorBox(err, "this appointment"), back]; }
  const vt = visitType(appt);
  const where = actorOf(appt, "Location");
  const reason = h("input", { id: "move-reason", type: "text" });
  return [h("h1", {}, "Move an appointment"), back,
    h("p", {}, `Now: ${visitName(appt)} on ${when(appt.start)}${placeOf(appt) ? `, ${placeOf(appt)}` : ""} (${APPT_WORDS[appt.status] || appt.status}).`),
    h("p", { class: "note" }, "Choose a new time. The old time is given up only when the new one is booked; if the new one cannot be booked, nothing changes."),
    h("label", { for: "move-reason" }, "Reason for moving (optional)"), reason,
    section("New time", offersForm("move", clinics, { clinic: where && where.reference, type: vt && vt.code }, "Move to this time", "moving this appointment", async (o) => {
      const moved = await post(`Appointment/${id}/$reschedule`, parameters(["appointment", "resource", o], ["reason", "valueString", reason.value.trim()]));
      flash(`Moved: ${visitName(appt)} is now on ${when((moved && moved.start) || o.start)}.`);
      go("#appointments");
    }))];
}

// ---------------------------------------------------------------- request
function requestForm(clinics) {
  const status = h("div", { role: "status" });
  const send = async (e) => {
    e.preventDefault();
    const clinic = document.getElementById("ask-clinic").value;
    const type = document.getElementById("ask-type").value;
    const reason = document.getElementById("ask-reason").value.trim();
    const from = document.getElementById("ask-from").value, to = document.getElementById("ask-to").value;
    const problems = [!clinic && "choose a clinic", !type && "choose a kind of visit", !reason && "say what the visit is for",
      !from && "give the earliest date", !to && "give the latest date", from && to && to < from && "the latest date is before the earliest"].filter(Boolean);
    if (problems.length) { status.replaceChildren(h("p", { class: "error", role: "alert" }, `Please ${problems.join(", ")}.`)); return; }
    const c = clinics.find((x) => x.ref === clinic);
    status.replaceChildren("Sending…");
    try {
      await post("Appointment", { resourceType: "Appointment", status: "proposed",
        serviceType: [{ coding: [{ system: VISIT_TYPE_SYSTEM, code: type, display: c.types.get(type) }] }],
        reasonCode: [{ text: reason }], requestedPeriod: [{ start: from, end: to }],
        participant: [{ actor: { reference: pref() }, status: "needs-action" }, { actor: { reference: clinic, display: c.name }, status: "needs-action" }] });
      flash(`Request sent: ${c.types.get(type)} at ${c.name}. The clinic's scheduling team will offer a time.`);
      go("#appointments");
    } catch (err) { status.replaceChildren(errorBox(err, "your appointment request")); }
  };
  return h("form", { onsubmit: send },
    h("p", { class: "note" }, "When no free time fits, or for a kind of visit the clinic books itself (for example a minor procedure), ask the clinic's scheduling team for a time."),
    ...clinicAndType("ask", clinics, false, null),
    h("label", { for: "ask-reason" }, "What is the visit for?"), h("textarea", { id: "ask-reason" }),
    h("label", { for: "ask-from" }, "Earliest date"), h("input", { id: "ask-from", type: "date" }),
    h("label", { for: "ask-to" }, "Latest date"), h("input", { id: "ask-to", type: "date" }),
    h("p", {}, h("button", { type: "submit" }, "Send the request")), status);
}
