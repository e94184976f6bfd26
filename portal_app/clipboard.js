/* The pre-visit clipboard (docs/portal-app.md, "Clipboards"): the Questionnaire a clipboard
   Task names, rendered as a labelled form (each question a label or a fieldset with a
   legend; enableWhen shows and hides follow-up questions), saved as a draft or sent as a
   QuestionnaireResponse. The server checks the answers (required items, options, types)
   and completes the Task in the same transaction; its refusals are shown in plain words,
   naming the question. Uses app.js's helpers. */
"use strict";

const ANSWER_KEYS = ["valueBoolean", "valueString", "valueInteger", "valueDecimal", "valueDate", "valueDateTime", "valueCoding", "valueUri"];
const VALUE_OF = { boolean: "valueBoolean", string: "valueString", text: "valueString", integer: "valueInteger",
  decimal: "valueDecimal", date: "valueDate", dateTime: "valueDateTime", url: "valueUri", choice: "valueCoding", "open-choice": "valueCoding" };

function flatItems(items, out = []) {
  for (const it of items || []) { out.push(it); flatItems(it.item, out); }
  return out;
}
function answerValue(a) { const k = ANSWER_KEYS.find((x) => a && a[x] !== undefined); return k ? a[k] : undefined; }
function same(a, b) {
  if (a && typeof a === "object" && b && typeof b === "object") return a.code === b.code && (!a.system || !b.system || a.system === b.system);
  return a === b;
}

/** Where the Task's Questionnaire is: its focus (the booking's Tasks) or an input canonical. */
function questionnaireOf(task) {
  const focus = (task.focus || {}).reference || "";
  if (focus.startsWith("Questionnaire/")) return { ref: focus };
  const input = (task.input || []).find((i) => i.valueCanonical);
  return input ? { url: input.valueCanonical } : null;
}
async function loadQuestionnaire(where) {
  if (where.ref) return api(where.ref);
  const [url, version] = where.url.split("|");
  const found = await search(`Questionnaire?url=${encodeURIComponent(url)}${version ? `&version=${encodeURIComponent(version)}` : ""}`);
  if (!found.length) throw Object.assign(new Error("no questionnaire"), { statusCode: 404 });
  return found[0];
}

async function clipboardPage(taskId) {
  const back = h("p", {}, h("a", { href: "#appointments" }, "Back to appointments"));
  const title = "Pre-visit clipboard";
  let task, q, draft = null, appt = null;
  try {
    task = await api(`Task/${taskId}`);
    const where = questionnaireOf(task);
    if (!where) return [h("h1", {}, title), back, missing("This request names no questionnaire to fill in. Send the clinic a message.")];
    q = await loadQuestionnaire(where);
    const out = (task.output || []).map((o) => (o.valueReference || {}).reference).find((r) => String(r).startsWith("QuestionnaireResponse/"));
    const apptRef = ((task.basedOn || [])[0] || {}).reference || (task.focus || {}).reference;
    [draft, appt] = await Promise.all([
      out ? api(out).catch(() => null) : null,
      String(apptRef || "").startsWith("Appointment/") ? api(apptRef).catch(() => null) : null,
    ]);
  } catch (err) { return [h("h1", {}, title), back, errorBox(err, "this clipboard")]; }
  const head = [h("h1", {}, `${q.title || title}`), back,
    appt ? h("p", {}, `For ${visitName(appt)} on ${when(appt.start)}.`) : null, q.description ? h("p", { class: "note" }, q.description) : null];
  if (task.status === "completed" || (draft && ["completed", "amended"].includes(draft.status))) {
    return [...head, h("p", { class: "done", "data-clipboard": "completed" }, `Completed${when(task.lastModified) ? ` on ${when(task.lastModified)}` : ""}. Thank you: the clinic will see your answers before the visit.`),
      draft ? section("Your answers", answersList(q, draft)) : null];
  }
  if (["cancelled", "rejected", "failed", "entered-in-error"].includes(task.status)) {
    return [...head, missing("This clipboard is no longer needed (the appointment was cancelled or moved).")];
  }
  if (!allowed("QuestionnaireResponse", "c")) return [...head, missing("Your sign-in cannot fill in clipboards.")];
  return [...head, clipboardForm(q, draft)];
}

function answersList(q, qr) {
  const given = new Map(flatItems(qr.item).map((i) => [i.linkId, i.answer || []]));
  const rows = flatItems(q.item).filter((it) => it.type !== "group" && it.type !== "display" && given.has(it.linkId));
  return rows.length ? h("dl", { class: "answers" }, rows.flatMap((it) => [h("dt", {}, it.text || it.linkId),
    h("dd", {}, given.get(it.linkId).map((a) => { const v = answerValue(a); return v === true ? "Yes" : v === false ? "No" : v && typeof v === "object" ? v.display || v.code : String(v); }).join(", "))]))
    : h("p", {}, "No answers.");
}

/** The form: one control per question, ids from the linkIds (prefixed, so they never clash). */
function clipboardForm(q, draft) {
  const items = flatItems(q.item);
  const controlId = (it) => `q-${it.linkId.replace(/[^A-Za-z0-9_-]/g, "_")}`;
  const prior = new Map(flatItems(draft && draft.item).map((i) => [i.linkId, answerValue((i.answer || [])[0])]));
  const status = h("div", { role: "status" });
  const wrappers = new Map();

  const read = (it) => {
    const id = controlId(it);
    if (it.type === "boolean") {
      const c = document.querySelector(`input[name="${id}"]:checked`);
      return c ? c.value === "yes" : undefined;
    }
    if (it.type === "choice" || it.type === "open-choice") {
      const c = document.querySelector(`input[name="${id}"]:checked`);
      return c ? (it.answerOption || [])[Number(c.value)].valueCoding : undefined;
    }
    const el = document.getElementById(id);
    const v = el ? el.value.trim() : "";
    if (v === "") return undefined;
    if (it.type === "integer") return /^-?\d+$/.test(v) ? Number(v) : v;
    if (it.type === "decimal") return isNaN(Number(v)) ? v : Number(v);
    return v;
  };
  const enabled = (it) => {
    if (!(it.enableWhen || []).length) return true;
    const tests = it.enableWhen.map((w) => {
      const target = items.find((x) => x.linkId === w.question);
      const got = target && isEnabledCache.get(target.linkId) !== false ? read(target) : undefined;
      const want = answerValue({ ...w, valueBoolean: w.answerBoolean, valueString: w.answerString, valueInteger: w.answerInteger,
        valueDecimal: w.answerDecimal, valueDate: w.answerDate, valueCoding: w.answerCoding });
      switch (w.operator) {
        case "exists": return (got !== undefined) === (w.answerBoolean !== false);
        case "=": return got !== undefined && same(got, want);
        case "!=": return got === undefined || !same(got, want);
        case ">": return got !== undefined && got > want;
        case "<": return got !== undefined && got < want;
        case ">=": return got !== undefined && got >= want;
        case "<=": return got !== undefined && got <= want;
        default: return true;
      }
    });
    return it.enableBehavior === "any" ? tests.some(Boolean) : tests.every(Boolean);
  };
  const isEnabledCache = new Map();
  const refresh = () => {
    isEnabledCache.clear();
    for (const it of items) {
      const on = enabled(it);
      isEnabledCache.set(it.linkId, on);
      const w = wrappers.get(it.linkId);
      if (w) w.hidden = !on;
    }
  };

  const words = (it) => [it.text || it.linkId, it.required ? h("span", { class: "required" }, " (required)") : null];
  const control = (it) => {
    const id = controlId(it);
    const was = prior.get(it.linkId);
    let el;
    if (it.type === "group") {
      el = h("fieldset", {}, h("legend", {}, it.text || ""), (it.item || []).map(control));
    } else if (it.type === "display") {
      el = h("p", {}, it.text || "");
    } else if (it.type === "boolean") {
      el = h("fieldset", { "aria-required": it.required ? "true" : null }, h("legend", {}, ...words(it)),
        h("label", {}, h("input", { type: "radio", name: id, value: "yes", checked: was === true, onchange: refresh }), " Yes"),
        h("label", {}, h("input", { type: "radio", name: id, value: "no", checked: was === false, onchange: refresh }), " No"));
    } else if (it.type === "choice" || it.type === "open-choice") {
      el = h("fieldset", { "aria-required": it.required ? "true" : null }, h("legend", {}, ...words(it)),
        (it.answerOption || []).map((o, i) => h("label", {}, h("input", { type: "radio", name: id, value: String(i), checked: !!(was && o.valueCoding && same(was, o.valueCoding)), onchange: refresh }),
          ` ${(o.valueCoding && (o.valueCoding.display || o.valueCoding.code)) || o.valueString || ""}`)));
    } else {
      const kind = { integer: "number", decimal: "number", date: "date" }[it.type] || "text";
      const input = it.type === "text" ? h("textarea", { id, "aria-required": it.required ? "true" : null, oninput: refresh })
        : h("input", { id, type: kind, step: it.type === "integer" ? "1" : it.type === "decimal" ? "any" : null, maxlength: it.maxLength || null,
          "aria-required": it.required ? "true" : null, oninput: refresh });
      if (was !== undefined && was !== null) input.value = String(was);
      el = h("div", {}, h("label", { for: id }, ...words(it)), input);
    }
    wrappers.set(it.linkId, el);
    return el;
  };

  const answersOf = (list) => list.flatMap((it) => {
    if (isEnabledCache.get(it.linkId) === false) return [];
    if (it.type === "display") return [];
    if (it.type === "group") { const kids = answersOf(it.item || []); return kids.length ? [{ linkId: it.linkId, item: kids }] : []; }
    const v = read(it);
    return v === undefined ? [] : [{ linkId: it.linkId, ...(it.text ? { text: it.text } : {}), answer: [{ [VALUE_OF[it.type] || "valueString"]: v }] }];
  });
  let saved = draft;
  const submit = async (complete) => {
    refresh();
    const unanswered = items.filter((it) => it.required && isEnabledCache.get(it.linkId) !== false && !["group", "display"].includes(it.type) && read(it) === undefined);
    if (complete && unanswered.length) {
      status.replaceChildren(h("div", { class: "error", role: "alert" }, `Please answer: ${unanswered.map((it) => `"${it.text || it.linkId}"`).join("; ")}.`));
      return;
    }
    const qr = { resourceType: "QuestionnaireResponse", status: complete ? "completed" : "in-progress",
      questionnaire: q.url || `Questionnaire/${q.id}`, subject: { reference: pref() }, authored: new Date().toISOString(), item: answersOf(q.item || []) };
    status.replaceChildren("Sending…");
    try {
      saved = saved && saved.id ? await put(`QuestionnaireResponse/${saved.id}`, { ...qr, id: saved.id }) : await post("QuestionnaireResponse", qr);
      if (complete) { flash("Clipboard sent. Thank you: the clinic will see your answers before the visit."); go("#appointments"); return; }
      status.replaceChildren(h("p", { class: "done" }, "Draft saved. You can come back and finish it later."));
    } catch (err) {
      status.replaceChildren(errorBox(err, "your clipboard answers"), ...questionsNamed(err, items));
    }
  };
  const form = h("form", { onsubmit: (e) => { e.preventDefault(); submit(true); } },
    h("p", { class: "note" }, "Questions marked (required) must be answered before you send the clipboard. You may save a draft at any time."),
    (q.item || []).map(control),
    h("p", {}, h("button", { type: "submit" }, "Send the clipboard"), h("button", { type: "button", onclick: () => submit(false) }, "Save a draft")), status);
  refresh();
  return form;
}

/** The server's findings name items by linkId (an `expression` ...where(linkId='x')): the
    questions' own words instead. */
function questionsNamed(err, items) {
  const issues = ((err && err.body && err.body.issue) || []);
  const named = new Set();
  for (const i of issues) for (const e of i.expression || []) { const m = /linkId='([^']+)'/.exec(e); if (m) named.add(m[1]); }
  const texts = [...named].map((l) => (items.find((it) => it.linkId === l) || {}).text || l);
  return texts.length ? [h("p", { class: "error" }, `Check your answer to: ${texts.map((t) => `"${t}"`).join("; ")}.`)] : [];
}
