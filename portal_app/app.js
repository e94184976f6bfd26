/* The MHS patient portal: a SMART public client (PKCE) that reads and writes the record only
   through the public FHIR API (/fhir) and the SMART authorization server (/auth), with the
   npm library `fhirclient` (client-js) doing all of OAuth. docs/portal-app.md explains it.
   This file is the shell and the shared helpers; appointments.js, clipboard.js and
   prescriptions.js hold those pages.

   Everything shown comes from the server's answers; every text is set with textContent (no
   HTML from data). The policy is the server's: the app never filters to hide something, it
   shows what the API returns and says in plain words what it cannot show and why. */
"use strict";

const CLIENT_ID = "mhs-portal-app";
// user/ scopes (not patient/): one sign-in covers the family members the policy lets the
// user act for, and the switcher changes whose record the pages ask for.
const SCOPE = "openid fhirUser user/*.cruds offline_access";
const LEVELS = {
  "dslogon-basic": "DS Logon Basic",
  "dslogon-premium": "DS Logon Premium",
  "managed": "Managed account",
  "cac": "CAC",
  "piv": "PIV card",
};
const TYPE_WORDS = {
  Observation: "lab results and vital signs",
  DiagnosticReport: "reports",
  DocumentReference: "clinical notes and documents",
  Condition: "health conditions",
  MedicationRequest: "prescriptions",
  Communication: "secure messages",
  AuditEvent: "the record of who looked at your record",
  Appointment: "appointments",
  Immunization: "immunizations",
  AllergyIntolerance: "allergies",
  Task: "the state of your requests and clipboards",
  QuestionnaireResponse: "clipboard answers",
  MedicationDispense: "pharmacy fills",
};

const state = { client: null, me: null, level: "", scopes: [], people: [], current: null, flash: null, catalogue: null };

// ---------------------------------------------------------------- small DOM helpers
function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const kid of kids.flat()) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}
const main = () => document.getElementById("main");
function section(title, ...kids) { return h("section", { "aria-label": title }, h("h2", {}, title), ...kids); }
function table(headers, rows, caption) {
  return h("div", { class: "scroll" }, h("table", {},
    caption ? h("caption", { class: "note" }, caption) : null,
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col" }, x)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c)))))));
}
function missing(text) { return h("p", { class: "missing" }, text); }
function errorBox(err, what) { return h("div", { class: "error", role: "alert" }, plainError(err, what)); }

// ---------------------------------------------------------------- words
function nameOf(res) {
  const n = (res && res.name && res.name[0]) || {};
  if (n.text) return n.text;
  const parts = [...(n.given || []), n.family].filter(Boolean);
  return parts.length ? parts.join(" ") : (res && res.id) || "someone";
}
function cc(c) {
  if (!c) return "";
  if (c.text) return c.text;
  const coding = (c.coding || [])[0] || {};
  return coding.display || coding.code || "";
}
function when(value) {
  if (!value) return "";
  const d = new Date(value);
  if (isNaN(d)) return value;
  return value.length <= 10 ? d.toLocaleDateString("en-US", { timeZone: "UTC", dateStyle: "medium" })
    : d.toLocaleString("en-US", { dateStyle: "medium", timeStyle: "short" });
}
function age(birthDate) {
  if (!birthDate) return null;
  const b = new Date(birthDate), now = new Date();
  let years = now.getUTCFullYear() - b.getUTCFullYear();
  const m = now.getUTCMonth() - b.getUTCMonth();
  if (m < 0 || (m === 0 && now.getUTCDate() < b.getUTCDate())) years -= 1;
  return years;
}
function quantity(q) { return q ? `${q.value ?? ""} ${q.unit || q.code || ""}`.trim() : ""; }
function range(rr) {
  if (!rr || !rr.length) return "not given";
  const r = rr[0];
  if (r.text) return r.text;
  const lo = r.low ? quantity(r.low) : "", hi = r.high ? quantity(r.high) : "";
  return lo && hi ? `${lo} to ${hi}` : lo ? `${lo} or more` : hi ? `up to ${hi}` : "not given";
}

/** Every API error in plain words; the server's own explanation (OperationOutcome) after. */
function plainError(err, what) {
  const status = err && (err.statusCode || err.status);
  let detail = "";
  const body = err && err.body;
  if (body && body.resourceType === "OperationOutcome") {
    detail = (body.issue || []).map((i) => (i.details && i.details.text) || i.diagnostics || "").filter(Boolean).join(" ");
  }
  const head = {
    400: `The server could not understand the request for ${what}.`,
    401: "Your sign-in has ended or was revoked. Reload the page to sign in again.",
    403: `You are not allowed to see or change ${what} with this sign-in.`,
    404: `There is no ${what} to show (it does not exist, or you may not see it).`,
    409: `The server could not do ${what}: it clashes with something else (a time just taken by someone, another appointment of yours at that time, or a change made at the same moment).`,
    412: `Someone changed ${what} at the same time. Reload and try again.`,
    413: "The file is too large.",
    415: "This kind of file cannot be attached.",
    422: `The server refused ${what}: it breaks a rule.`,
    429: "The server is busy. Wait a moment and try again.",
    501: `This server does not offer ${what} yet.`,
    503: "The server is busy or starting. Wait a moment and try again.",
  }[status] || (status ? `The server answered an error (${status}) for ${what}.` : `The server could not be reached for ${what}. Check your connection.`);
  return detail ? `${head} The server says: ${detail}` : head;
}

// ---------------------------------------------------------------- API
async function api(url, options) {
  try {
    return await state.client.request(options ? { url, ...options } : url, { flat: false });
  } catch (err) {
    // client-js keeps the response; read the OperationOutcome once for plainError.
    if (err && err.response && !err.body) {
      try { err.body = await err.response.clone().json(); } catch (_) { /* not JSON */ }
    }
    if (err && !err.statusCode && err.response) err.statusCode = err.response.status;
    // A revoked or ended sign-in: forget client-js's stored session, so that reloading
    // starts a new sign-in instead of retrying the dead token.
    if (err && err.statusCode === 401) sessionStorage.clear();
    throw err;
  }
}
/** Every page's matches (10 pages at most); `included`, when given, collects the
    `_include`d resources by their reference ("Location/x"). */
async function search(url, included) {
  const out = [];
  let next = url;
  for (let page = 0; next && page < 10; page += 1) {
    const bundle = await api(next);
    for (const e of bundle.entry || []) {
      if (!e.resource) continue;
      if (!e.search || e.search.mode !== "include") out.push(e.resource);
      else if (included) included.set(`${e.resource.resourceType}/${e.resource.id}`, e.resource);
    }
    const link = (bundle.link || []).find((l) => l.relation === "next");
    next = link ? link.url : null;
  }
  return out;
}
function post(url, body) {
  return api(url, { method: "POST", body: body ? JSON.stringify(body) : undefined,
    headers: { "Content-Type": "application/fhir+json" } });
}
function put(url, body) {
  return api(url, { method: "PUT", body: JSON.stringify(body), headers: { "Content-Type": "application/fhir+json" } });
}
/** FHIR Parameters from [name, value[x] name, value] triples (empty values left out). */
function parameters(...rows) {
  return { resourceType: "Parameters", parameter: rows.filter((r) => r[2] !== undefined && r[2] !== null && r[2] !== "")
    .map(([name, kind, value]) => ({ name, [kind]: value })) };
}
/** A search whose answer may be left out: an empty list when the token may not search `type`. */
function searchIf(type, url) { return allowed(type, "s") ? search(url) : Promise.resolve([]); }
/** A one-time note for the next rendering of a page (what the last action did). */
function flash(text) { state.flash = text; }
function takeFlash() {
  const text = state.flash; state.flash = null;
  return text ? h("p", { class: "done", role: "status" }, text) : null;
}
/** Go to `hash`, rendering it again when it is the current one. */
function go(hash) { if (location.hash === hash) route(); else location.hash = hash; }
/** A button that asks once more before an action (no browser dialogs: plain, keyboard-usable). */
function confirmButton(label, question, confirmLabel, action, reasonLabel, what) {
  const out = h("span", { class: "confirm" });
  const ask = () => {
    const id = `why-${Math.random().toString(36).slice(2, 8)}`;
    const reason = reasonLabel ? h("input", { id, type: "text" }) : null;
    const status = h("span", { role: "status" });
    const yes = h("button", { type: "button", onclick: async () => {
      yes.disabled = true;
      status.replaceChildren("Sending…");
      try { await action(reason ? reason.value.trim() : ""); }
      catch (err) { yes.disabled = false; status.replaceChildren(errorBox(err, what || label.toLowerCase())); }
    } }, confirmLabel);
    out.replaceChildren(h("span", { class: "note" }, question), reasonLabel ? h("label", { for: id }, reasonLabel) : null, reason,
      h("span", {}, yes, h("button", { type: "button", onclick: () => out.replaceChildren(first) }, "Keep it")), status);
    (reason || yes).focus();
  };
  const first = h("button", { type: "button", onclick: ask }, label);
  out.append(first);
  return out;
}
/** Whether the token's scopes allow `action` (r/s/c/u) on `type`: the login level's
    ceiling, as the authorization server granted it. */
function allowed(type, action) {
  return state.scopes.some((s) => {
    const m = /^(patient|user)\/([A-Za-z*]+)\.([cruds]+|read|write|\*)$/.exec(s);
    if (!m || (m[2] !== "*" && m[2] !== type)) return false;
    const p = m[3] === "read" ? "rs" : m[3] === "write" ? "cud" : m[3] === "*" ? "cruds" : m[3];
    return p.includes(action);
  });
}
function whyMissing(type) {
  const words = TYPE_WORDS[type] || type;
  if (state.level === "dslogon-basic") {
    return `Your ${LEVELS[state.level]} sign-in does not include ${words}. Sign in with DS Logon Premium, CAC or PIV to see them.`;
  }
  return `Your sign-in does not include ${words}.`;
}
const pid = () => state.current.id;
const pref = () => `Patient/${state.current.id}`;

// ---------------------------------------------------------------- shell
async function start() {
  const status = document.getElementById("status");
  let client;
  try {
    client = await FHIR.oauth2.ready();
  } catch (_) {
    // No session yet (or an expired one): start the SMART standalone launch with PKCE.
    const iss = `${location.origin}/fhir`;
    await FHIR.oauth2.authorize({ clientId: CLIENT_ID, scope: SCOPE, iss, redirectUri: `${location.origin}/portal/`, pkceMode: "required" });
    return;
  }
  state.client = client;
  state.scopes = String(client.state.tokenResponse.scope || "").split(/\s+/);
  const idToken = client.getIdToken() || {};
  state.level = idToken.acr || "";
  try {
    state.me = await api(client.getFhirUser().replace(/^.*\/(Patient|Practitioner|RelatedPerson)\//, "$1/"));
    state.people = await search("Patient?_count=50");
  } catch (err) {
    status.replaceWith(errorBox(err, "your record"));
    return;
  }
  const meFirst = (a, b) => (a.id === state.me.id ? -1 : b.id === state.me.id ? 1 : nameOf(a).localeCompare(nameOf(b)));
  state.people.sort(meFirst);
  state.current = state.people.find((p) => p.id === state.me.id) || state.people[0] || state.me;
  renderWho();
  window.addEventListener("hashchange", route);
  route();
}

function renderWho() {
  const box = document.getElementById("whoami");
  box.replaceChildren();
  const select = h("select", { id: "acting-for", onchange: (e) => {
    state.current = state.people.find((p) => p.id === e.target.value);
    route();
  } }, state.people.map((p) => h("option", { value: p.id, selected: p.id === state.current.id },
    p.id === state.me.id ? `${nameOf(p)} (you)` : nameOf(p))));
  box.append(
    h("span", {}, "Signed in as ", h("strong", {}, nameOf(state.me)), ` with ${LEVELS[state.level] || state.level || "an unknown sign-in"}. `),
    state.people.length > 1 ? h("span", {}, h("label", { for: "acting-for" }, "Showing the record of "), select) : "",
  );
}

// Looked up when a page opens: two of the pages are defined by the scripts loaded after this one.
const pages = () => ({ home, record, messages, appointments, prescriptions, privacy });
async function route() {
  const name = (location.hash || "#home").slice(1).split("/")[0];
  const page = pages()[name] || home;
  for (const a of document.querySelectorAll("nav a")) {
    if (a.getAttribute("href") === `#${page.name}`) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  const m = main();
  m.removeAttribute("data-ready");
  m.replaceChildren(h("p", { role: "status" }, "Loading…"));
  const out = await page();
  m.replaceChildren(...out.filter((x) => x !== null && x !== undefined));
  m.setAttribute("data-page", page.name);
  m.setAttribute("data-ready", "1");
  document.title = `${m.querySelector("h1") ? m.querySelector("h1").textContent : "Portal"} – MHS patient portal`;
  // Keyboard and screen-reader users land on what just happened (an action's outcome), or on
  // the heading of a sub-page they opened (a thread, a clipboard); the control they used is gone.
  const landing = m.querySelector("p.done") || (location.hash.includes("/") ? m.querySelector("h1") : null);
  if (landing) { landing.tabIndex = -1; landing.focus(); }
}

/** One block of a page: its content, or its error in plain words (other blocks still show). */
async function block(title, type, build) {
  if (type && !allowed(type, "s")) return section(title, missing(whyMissing(type)));
  try {
    return section(title, ...[await build()].flat());
  } catch (err) {
    return section(title, errorBox(err, TYPE_WORDS[type] || title.toLowerCase()));
  }
}

function bandNote() {
  const a = age(state.current.birthDate);
  if (state.current.id === state.me.id || a === null) return null;
  if (a >= 12 && a < 18) {
    return missing(`${nameOf(state.current)} is ${a}. For a family member aged 12 to 17 you see only their demographics, appointments, immunizations and allergies; anything else (results, notes, messages with the care team) is theirs to share.`);
  }
  return h("p", { class: "note" }, `You are acting for ${nameOf(state.current)} (age ${a}).`);
}

// ---------------------------------------------------------------- Home
async function home() {
  const today = new Date().toISOString().slice(0, 10);
  const blocks = await Promise.all([
    block("Next appointments", "Appointment", async () => {
      const list = await search(`Appointment?patient=${pid()}&date=ge${today}&_sort=date&_count=5`);
      return list.length ? h("ul", {}, list.slice(0, 5).map((a) => h("li", {}, `${when(a.start)}: ${a.description || cc((a.serviceType || [])[0]) || "appointment"} (${a.status})`)))
        : h("p", {}, "No upcoming appointments.");
    }),
    block("Unread messages", "Communication", async () => {
      const list = await search(`Communication?recipient=${pref()}&received:missing=true&_count=20`);
      return h("p", {}, list.length ? `${list.length} unread message${list.length === 1 ? "" : "s"}. ` : "No unread messages. ",
        h("a", { href: "#messages" }, "Open messages"));
    }),
    block("New results", "Observation", async () => {
      const list = await search(`Observation?patient=${pid()}&category=laboratory&_sort=-date&_count=5`);
      return list.length ? h("ul", {}, list.slice(0, 5).map((o) => h("li", {}, `${cc(o.code)}: ${quantity(o.valueQuantity) || cc(o.valueCodeableConcept) || o.valueString || ""} (${when(o.effectiveDateTime || o.issued)})`)))
        : h("p", {}, "No results.");
    }),
  ]);
  const family = state.people.filter((p) => p.id !== state.me.id);
  return [
    h("h1", {}, `Home: ${nameOf(state.current)}`),
    bandNote(),
    state.level === "dslogon-basic" ? missing("You signed in with DS Logon Basic: it shows demographics, appointments, immunizations and allergies only, and cannot send messages or request refills. Sign in with DS Logon Premium, CAC or PIV for the rest.") : null,
    section("Family members you may act for", family.length
      ? h("ul", {}, family.map((p) => h("li", {}, `${nameOf(p)}${age(p.birthDate) !== null ? ` (age ${age(p.birthDate)})` : ""}`)))
      : h("p", {}, "Only your own record.")),
    ...blocks,
  ];
}

// ---------------------------------------------------------------- Health record
const charts = [];
async function record() {
  while (charts.length) charts.pop().destroy();
  const p = pid();
  const blocks = await Promise.all([
    block("Lab results", "Observation", async () => {
      const obs = await search(`Observation?patient=${p}&category=laboratory&_sort=date&_count=100`);
      if (!obs.length) return h("p", {}, "No lab results.");
      const byCode = new Map();
      for (const o of obs) {
        const key = cc(o.code) || "Result";
        if (!byCode.has(key)) byCode.set(key, []);
        byCode.get(key).push(o);
      }
      const out = [];
      for (const [name, list] of byCode) {
        const rows = list.slice().reverse().map((o) => [when(o.effectiveDateTime || o.issued),
          quantity(o.valueQuantity) || cc(o.valueCodeableConcept) || o.valueString || "",
          range(o.referenceRange), (o.interpretation || []).map(cc).join(", ") || "normal or not flagged"]);
        out.push(h("h3", {}, name), table(["Date", "Value", "Reference range", "Flag"], rows));
        const points = list.filter((o) => o.valueQuantity && typeof o.valueQuantity.value === "number");
        // A chart per lab test, with its reference range as two dashed lines, so a single
        // result still reads against its range; more results make the trend.
        if (points.length && window.Chart) {
          const rr = (list[0].referenceRange || [])[0] || {};
          const line = (q, label) => (q && typeof q.value === "number" ? [{ label, data: points.map(() => q.value), borderDash: [6, 4], borderColor: "#4a4a4a", pointRadius: 0 }] : []);
          const canvas = h("canvas", { role: "img", "aria-label": `Chart of ${name}: ${points.map((o) => `${quantity(o.valueQuantity)} on ${when(o.effectiveDateTime)}`).join("; ")}; reference range ${range(list[0].referenceRange)}` });
          out.push(h("div", { class: "chart" }, canvas));
          if (points.length === 1) out.push(h("p", { class: "note" }, "One result so far: the chart shows it against the reference range."));
          charts.push(new Chart(canvas, { type: "line", data: {
            labels: points.map((o) => when(o.effectiveDateTime || o.issued)),
            datasets: [{ label: `${name} (${points[0].valueQuantity.unit || ""})`, data: points.map((o) => o.valueQuantity.value), borderColor: "#0b4f8a", pointStyle: "rectRot", pointRadius: 6 },
              ...line(rr.low, "Lowest normal"), ...line(rr.high, "Highest normal")],
          }, options: { animation: false, maintainAspectRatio: false } }));
        }
      }
      return out;
    }),
    block("Reports", "DiagnosticReport", async () => {
      const list = await search(`DiagnosticReport?patient=${p}&_sort=-date&_count=50`);
      return list.length ? h("ul", { class: "plain" }, list.map((r) => h("li", { class: "card" },
        h("strong", {}, cc(r.code) || "Report"), ` (${r.status}, ${when(r.effectiveDateTime || r.issued)})`,
        r.conclusion ? h("p", {}, r.conclusion) : null,
        (r.presentedForm || []).map((a) => attachmentLink(a, cc(r.code)))))) : h("p", {}, "No reports.");
    }),
    block("Clinical notes and documents", "DocumentReference", async () => {
      const list = await search(`DocumentReference?patient=${p}&_count=50`);
      return list.length ? h("ul", { class: "plain" }, list.map((d) => h("li", { class: "card" },
        h("strong", {}, d.description || cc(d.type) || "Document"), ` (${when(d.date)})`,
        (d.content || []).map((c) => attachmentLink(c.attachment || {}, d.description || cc(d.type)))))) : h("p", {}, "No notes.");
    }),
    block("Immunizations", "Immunization", async () => {
      const list = await search(`Immunization?patient=${p}&_sort=-date&_count=100`);
      if (!list.length) return h("p", {}, "No immunizations.");
      return [table(["Vaccine", "Date", "Status"], list.map((i) => [cc(i.vaccineCode), when(i.occurrenceDateTime), i.status])),
        h("button", { type: "button", onclick: () => download(`immunizations-${p}.json`, JSON.stringify({ resourceType: "Bundle", type: "collection", entry: list.map((r) => ({ resource: r })) }, null, 2), "application/fhir+json") }, "Download immunizations (FHIR JSON)"),
        h("button", { type: "button", onclick: () => download(`immunizations-${p}.csv`, ["vaccine,date,status", ...list.map((i) => [cc(i.vaccineCode), i.occurrenceDateTime || "", i.status].map((x) => `"${String(x).replace(/"/g, '""')}"`).join(","))].join("\n"), "text/csv") }, "Download immunizations (spreadsheet CSV)")];
    }),
    block("Allergies", "AllergyIntolerance", async () => {
      const list = await search(`AllergyIntolerance?patient=${p}&_count=100`);
      return list.length ? table(["Allergy", "Reaction", "Status"], list.map((a) => [cc(a.code),
        (a.reaction || []).flatMap((r) => (r.manifestation || []).map(cc)).join(", "), cc(a.clinicalStatus)])) : h("p", {}, "No known allergies recorded.");
    }),
    block("Health conditions", "Condition", async () => {
      const list = await search(`Condition?patient=${p}&_count=100`);
      return list.length ? table(["Condition", "Status", "Since"], list.map((c) => [cc(c.code), cc(c.clinicalStatus), when(c.onsetDateTime || c.recordedDate)])) : h("p", {}, "No conditions recorded.");
    }),
    block("Medications", "MedicationRequest", async () => {
      const list = await search(`MedicationRequest?patient=${p}&_count=100`);
      return list.length ? table(["Medication", "Status", "Instructions"], list.map((m) => [cc(m.medicationCodeableConcept) || (m.medicationReference || {}).display || "medication", m.status, ((m.dosageInstruction || [])[0] || {}).text || ""])) : h("p", {}, "No medications.");
    }),
  ]);
  return [h("h1", {}, `Health record: ${nameOf(state.current)}`), bandNote(), ...blocks];
}

function attachmentLink(att, title) {
  if (att.url && /^(Binary\/|.*\/fhir\/Binary\/)/.test(att.url)) {
    return h("button", { type: "button", onclick: (e) => openBinary(att, title, e.target) }, `Open ${att.title || title || "document"} (${att.contentType || "file"})`);
  }
  if (att.data) {
    return h("button", { type: "button", onclick: () => download(att.title || "document", b64bytes(att.data), att.contentType || "application/octet-stream") }, `Download ${att.title || title || "document"}`);
  }
  return att.url ? h("span", { class: "note" }, ` Document at ${att.url}`) : null;
}
async function openBinary(att, title, button) {
  try {
    const bin = await api(att.url.replace(/^.*\/fhir\//, ""));
    download(att.title || `${title || "document"}`, b64bytes(bin.data || ""), bin.contentType || att.contentType);
  } catch (err) {
    button.after(errorBox(err, "this document"));
  }
}
function b64bytes(data) { const s = atob(data); const b = new Uint8Array(s.length); for (let i = 0; i < s.length; i += 1) b[i] = s.charCodeAt(i); return b; }
function download(name, content, type) {
  const url = URL.createObjectURL(new Blob([content], { type }));
  const a = h("a", { href: url, download: name });
  document.body.append(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

// ---------------------------------------------------------------- Messages
const CATEGORIES = [["medical-question", "A medical question"], ["medication", "Medication"], ["test-results", "Test results"], ["appointment", "Appointments"], ["forms", "Forms"], ["administrative", "Administrative"]];
const CATEGORY_SYSTEM = "https://mhs.example.org/fhir/CodeSystem/message-category";

async function messages() {
  const thread = (location.hash.split("/")[1] || "").replace(/[^A-Za-z0-9\-.]/g, "");
  if (!allowed("Communication", "s")) return [h("h1", {}, "Messages"), missing(whyMissing("Communication"))];
  if (thread) return threadPage(thread);
  const list = await block("Conversations", "Communication", async () => {
    const [threads, unread] = await Promise.all([
      search(`Communication?subject=${pref()}&part-of:missing=true&_count=50`),
      search(`Communication?recipient=${pref()}&received:missing=true&_count=100`),
    ]);
    const unreadBy = new Map();
    for (const m of unread) for (const part of m.partOf || []) unreadBy.set(part.reference, (unreadBy.get(part.reference) || 0) + 1);
    if (!threads.length) return h("p", {}, "No conversations yet.");
    return h("ul", { class: "plain" }, threads.map((t) => {
      const n = unreadBy.get(`Communication/${t.id}`) || 0;
      return h("li", { class: `card${n ? " unread" : ""}` }, h("a", { href: `#messages/${t.id}` }, (t.topic && t.topic.text) || "Conversation"),
        ` ${n ? `(${n} unread)` : "(all read)"} · ${t.status === "in-progress" ? "open" : "closed"} · to ${(t.recipient || []).map((r) => r.display || r.reference).join(", ")}`);
    }));
  });
  return [h("h1", {}, `Messages: ${nameOf(state.current)}`), bandNote(), list,
    allowed("Communication", "c") ? composeForm() : missing("Your sign-in cannot send messages.")];
}

function composeForm() {
  const status = h("div", { role: "status" });
  const results = h("div", {});
  let chosen = null;
  const find = async () => {
    results.replaceChildren();
    try {
      const q = document.getElementById("recipient-search").value.trim();
      const teams = await search(`Communication/$recipients?patient=${pid()}${q ? `&name=${encodeURIComponent(q)}` : ""}`);
      if (!teams.length) { results.append(h("p", {}, "No care team or clinic matches. Try another name.")); return; }
      results.append(h("fieldset", {}, h("legend", {}, "Send to"), teams.map((t, i) => h("label", {},
        h("input", { type: "radio", name: "recipient", value: `CareTeam/${t.id}`, checked: i === 0, onchange: () => { chosen = `CareTeam/${t.id}`; } }),
        ` ${t.name || t.id}`))));
      chosen = `CareTeam/${teams[0].id}`;
    } catch (err) { results.append(errorBox(err, "the list of recipients")); }
  };
  const send = async (e) => {
    e.preventDefault();
    status.replaceChildren("Sending…");
    const topic = document.getElementById("topic").value.trim();
    const text = document.getElementById("body").value.trim();
    if (!chosen || !topic || !text) { status.replaceChildren(h("p", { class: "error", role: "alert" }, "Choose a recipient (search first), write a subject and a message.")); return; }
    try {
      const header = await post("Communication", { resourceType: "Communication", status: "in-progress", topic: { text: topic },
        category: [{ coding: [{ system: CATEGORY_SYSTEM, code: document.getElementById("category").value }] }],
        subject: { reference: pref() }, recipient: [{ reference: chosen }] });
      await post("Communication", await messageBody(header.id, text, document.getElementById("file")));
      location.hash = `#messages/${header.id}`;
    } catch (err) { status.replaceChildren(errorBox(err, "your message")); }
  };
  return section("Write a new message", h("form", { onsubmit: send },
    h("label", { for: "recipient-search" }, "Find a clinic or care team by name"),
    h("input", { id: "recipient-search", type: "search", placeholder: "e.g. family medicine" }),
    h("button", { type: "button", onclick: find }, "Search recipients"), results,
    h("label", { for: "category" }, "About"),
    h("select", { id: "category" }, CATEGORIES.map(([code, label]) => h("option", { value: code }, label))),
    h("label", { for: "topic" }, "Subject"), h("input", { id: "topic", type: "text" }),
    h("label", { for: "body" }, "Message"), h("textarea", { id: "body" }),
    h("label", { for: "file" }, "Attach a file (PDF, PNG, JPEG or text; optional)"), h("input", { id: "file", type: "file", accept: "application/pdf,image/png,image/jpeg,text/plain" }),
    h("p", {}, h("button", { type: "submit" }, "Send message")), status));
}

async function messageBody(threadId, text, fileInput, replyTo) {
  const payload = [{ contentString: text }];
  const file = fileInput && fileInput.files && fileInput.files[0];
  if (file) {
    const bytes = new Uint8Array(await file.arrayBuffer());
    let bin = ""; for (const b of bytes) bin += String.fromCharCode(b);
    payload.push({ contentAttachment: { contentType: file.type || "application/octet-stream", title: file.name, data: btoa(bin) } });
  }
  return { resourceType: "Communication", status: "completed", partOf: [{ reference: `Communication/${threadId}` }],
    subject: { reference: pref() }, payload, ...(replyTo ? { inResponseTo: [{ reference: `Communication/${replyTo}` }] } : {}) };
}

async function threadPage(id) {
  let header, list;
  try {
    [header, list] = await Promise.all([api(`Communication/${id}`), search(`Communication?part-of=Communication/${id}&_sort=sent&_count=100`)]);
  } catch (err) { return [h("h1", {}, "Conversation"), errorBox(err, "this conversation"), h("a", { href: "#messages" }, "Back to messages")]; }
  const mine = new Set([pref(), ...state.people.map((p) => `Patient/${p.id}`)]);
  // Opening the thread marks what was sent to this patient as read ($mark-read, once each).
  const marks = list.filter((m) => !m.received && (m.recipient || []).some((r) => mine.has(r.reference)));
  const failed = [];
  await Promise.all(marks.map((m) => post(`Communication/${m.id}/$mark-read`).catch((err) => failed.push(err))));
  const status = h("div", { role: "status" });
  const reply = async (e) => {
    e.preventDefault();
    const text = document.getElementById("reply").value.trim();
    if (!text) { status.replaceChildren(h("p", { class: "error", role: "alert" }, "Write a reply first.")); return; }
    try {
      await post("Communication", await messageBody(id, text, document.getElementById("reply-file"), list.length ? list[list.length - 1].id : null));
      route();
    } catch (err) { status.replaceChildren(errorBox(err, "your reply")); }
  };
  return [h("h1", {}, (header.topic && header.topic.text) || "Conversation"), h("a", { href: "#messages" }, "Back to messages"),
    failed.length ? errorBox(failed[0], "marking messages read") : null,
    h("ol", { class: "plain" }, list.map((m) => h("li", { class: "msg" },
      h("p", { class: "note" }, `${(m.sender && (m.sender.display || m.sender.reference)) || "someone"}, ${when(m.sent)}${marks.includes(m) ? " · new" : ""}`),
      (m.payload || []).map((pl) => pl.contentString ? h("p", {}, pl.contentString) : pl.contentAttachment ? attachmentLink(pl.contentAttachment, "attachment") : null)))),
    header.status === "in-progress" && allowed("Communication", "c") ? h("form", { onsubmit: reply },
      h("label", { for: "reply" }, "Reply"), h("textarea", { id: "reply" }),
      h("label", { for: "reply-file" }, "Attach a file (optional)"), h("input", { id: "reply-file", type: "file" }),
      h("p", {}, h("button", { type: "submit" }, "Send reply")), status) : h("p", { class: "note" }, "This conversation is closed or your sign-in cannot reply.")];
}

// ---------------------------------------------------------------- Privacy
async function privacy() {
  const who = await block("Who looked at my record", "AuditEvent", async () => {
    const events = await search(`AuditEvent?patient=${pid()}&_sort=-date&_count=50`);
    if (!events.length) return h("p", {}, "No record of access to show.");
    const people = new Map(state.people.map((p) => [`Patient/${p.id}`, nameOf(p)]));
    people.set(`${state.me.resourceType}/${state.me.id}`, `${nameOf(state.me)} (you)`);
    const did = { read: "opened a record", vread: "opened a record", "search-type": "searched the record", search: "searched the record",
      create: "added something", update: "changed something", patch: "changed something", delete: "deleted something", operation: "ran an operation", history: "looked at history" };
    const verbs = { C: "added something", R: "opened a record", U: "changed something", D: "deleted something", E: "searched or ran an operation" };
    return table(["When", "Who", "With", "What", "Result"], events.map((e) => {
      const requestor = (e.agent || []).find((a) => a.requestor) || {};
      const ref = requestor.who && requestor.who.reference;
      const app = (e.agent || []).find((a) => !a.requestor && ((a.type || {}).coding || []).some((c) => c.code === "110153"));
      const sub = ((e.subtype || [])[0] || {}).code;
      return [when(e.recorded), (ref && people.get(ref)) || (requestor.who && (requestor.who.display || ref)) || "someone",
        (app && app.who && app.who.display) || "", did[sub] || verbs[e.action] || "looked", e.outcome === "0" ? "allowed" : "refused"];
    }), "Newest first; at most 50");
  });
  return [h("h1", {}, `Privacy: ${nameOf(state.current)}`), who,
    section("Connected apps", h("p", {}, "The apps you allowed to reach your record, with what they may see and when they last connected, are listed on the sign-in server's page. You can stop any of them there: it loses access at once."),
      h("p", {}, h("a", { href: "/auth/manage" }, "See and revoke connected apps")))];
}

// The Appointments and Prescriptions pages are in appointments.js, clipboard.js and
// prescriptions.js (loaded after this file; they use the helpers above).

// Every script is loaded (they are classic scripts, run in order) before this runs.
document.addEventListener("DOMContentLoaded", () => start().catch((err) => { main().replaceChildren(errorBox(err, "the sign-in")); }));
