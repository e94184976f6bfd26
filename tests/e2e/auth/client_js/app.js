// A minimal SMART app on npm `fhirclient` (client-js), Node adapter.
// GET /launch?iss=...&scope=...[&launch=...] starts a standalone or EHR launch;
// GET /callback finishes it and answers with what the app could read, as JSON.
// Usage: node app.js <port> <client_id>
"use strict";
const http = require("http");
const smart = require("fhirclient");

const [port, clientId] = process.argv.slice(2);
// One browser drives this app in a test: a single shared session is enough.
const session = {};

http
  .createServer(async (req, res) => {
    req.session = session;
    const url = new URL(req.url, `http://127.0.0.1:${port}`);
    try {
      if (url.pathname === "/launch") {
        await smart(req, res).authorize({
          clientId,
          iss: url.searchParams.get("iss"),
          launch: url.searchParams.get("launch") || undefined,
          scope: url.searchParams.get("scope"),
          redirectUri: "/callback",
          pkceMode: "required",
        });
      } else if (url.pathname === "/callback") {
        const client = await smart(req, res).ready();
        const patient = await client.patient.read();
        const observations = await client.request(
          `Observation?subject=Patient/${client.patient.id}`,
          { flat: true, pageLimit: 0 }
        );
        res.setHeader("content-type", "application/json");
        res.end(
          JSON.stringify({
            patient: patient.id,
            subjects: [...new Set(observations.map((o) => o.subject.reference))],
            count: observations.length,
            scope: client.state.tokenResponse.scope,
          })
        );
      } else {
        res.statusCode = 404;
        res.end("not found");
      }
    } catch (err) {
      res.statusCode = 500;
      res.end(String((err && err.stack) || err));
    }
  })
  .listen(Number(port), "127.0.0.1", () => console.log("ready"));
