// fhir-kit-client's common calls against a running server, as a Node app would make them
// (tests/e2e/test_client_libraries.py reads the JSON printed at the end and checks it).
// Usage: node fhir_kit.mjs BASE_URL TOKEN PATIENT_ID OTHER_PATIENT_ID
import { Client, CapabilityTool } from "fhir-kit-client";

const [baseUrl, bearerToken, patient, other] = process.argv.slice(2);
const client = new Client({ baseUrl, bearerToken });
const out = {};
const status = async (call) => {
  try { await call(); return 200; } catch (err) { return (err.response && err.response.status) || String(err); }
};

const cs = await client.capabilityStatement();
const tool = new CapabilityTool(cs);
out.fhirVersion = cs.fhirVersion;
out.canSearchObservationByPatient = tool.resourceSearch("Observation", "patient");
const smart = await client.smartAuthMetadata();
out.authorizeUrl = smart.authorizeUrl ? smart.authorizeUrl.toString() : null;
out.tokenUrl = smart.tokenUrl ? smart.tokenUrl.toString() : null;

out.patient = (await client.read({ resourceType: "Patient", id: patient })).id;
let bundle = await client.search({ resourceType: "Observation", searchParams: { patient, _count: "5" } });
out.total = bundle.total;
const ids = [];
for (let page = 0; bundle && page < 50; page += 1) {
  for (const e of bundle.entry || []) ids.push(e.resource.id);
  bundle = (await client.nextPage({ bundle })) ?? null;
}
out.pagedIds = ids;
out.compartment = ((await client.compartmentSearch({ resourceType: "Condition", compartment: { resourceType: "Patient", id: patient } })).entry || [])
  .map((e) => e.resource.subject.reference);

const draft = { resourceType: "Appointment", status: "proposed", description: "fhir-kit-client draft",
  participant: [{ actor: { reference: `Patient/${patient}` }, status: "needs-action" }] };
const made = await client.create({ resourceType: "Appointment", body: draft });
const changed = await client.update({ resourceType: "Appointment", id: made.id, body: { ...made, description: "fhir-kit-client draft, changed" } });
out.created = { id: made.id, version: made.meta.versionId, updatedVersion: changed.meta.versionId, description: changed.description };
out.vread = (await client.vread({ resourceType: "Appointment", id: made.id, version: "1" })).description;
out.history = ((await client.history({ resourceType: "Appointment", id: made.id })).entry || []).length;
const found = await client.operation({ name: "find", resourceType: "Appointment", method: "GET", input: { patient, _count: "2" } });
out.findOffers = (found.entry || []).map((e) => e.resource.status);
const batch = await client.batch({ body: { resourceType: "Bundle", type: "batch", entry: [
  { request: { method: "GET", url: `Patient/${patient}` } },
  { request: { method: "GET", url: `Patient/${other}` } },
] } });
out.batch = (batch.entry || []).map((e) => e.response.status);
out.otherPatient = await status(() => client.read({ resourceType: "Patient", id: other }));
out.badSearch = await status(() => client.search({ resourceType: "Observation", searchParams: { "no-such-parameter": "x" }, options: { headers: { Prefer: "handling=strict" } } }));
console.log(JSON.stringify(out));
