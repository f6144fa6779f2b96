// Server-Sent Events over fetch. EventSource cannot send an Authorization header, and the key
// must not go into the URL, so the stream is read and parsed here (the text/event-stream format:
// blocks separated by a blank line, "event:" and "data:" fields, ":" comments as keep-alives).

import { apiUrl, authHeaders, problemOf } from "./api.js";

function parseBlock(block) {
  let type = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line === "" || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") type = value;
    else if (field === "data") data.push(value);
  }
  return data.length ? { type, data: JSON.parse(data.join("\n")) } : null;
}

/** Calls onEvent({type, data}) for each event until the server ends the stream or signal aborts. */
export async function followEvents(path, onEvent, signal) {
  const response = await fetch(apiUrl(path), {
    headers: { Accept: "text/event-stream", ...authHeaders() },
    cache: "no-store",
    credentials: "omit",
    signal,
  });
  if (!response.ok) throw await problemOf(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer = (buffer + value).replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = parseBlock(buffer.slice(0, end));
      buffer = buffer.slice(end + 2);
      if (event) onEvent(event);
    }
  }
}
