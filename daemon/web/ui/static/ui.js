// edgewatch web UI: tile counters refresh (cameras page) and the live event list (events page, SSE).
"use strict";

function refreshTiles() {
  fetch("/ui/cameras.json", {credentials: "same-origin"}).then(r => r.ok ? r.json() : []).then(cams => {
    for (const cam of cams) {
      const tile = document.querySelector(`.tile[data-source="${CSS.escape(cam.id)}"]`);
      if (!tile) continue;
      for (const el of tile.querySelectorAll("[data-field]")) {
        const value = cam[el.dataset.field];
        el.textContent = value === null ? "–" : value;
        if (el.dataset.field === "state") el.className = "state state-" + value;
      }
    }
  }).catch(() => {});
}

function cell(row, content) {
  const td = document.createElement("td");
  if (content instanceof Node) td.appendChild(content); else td.textContent = content ?? "";
  row.appendChild(td);
  return td;
}

function link(ev, text) {
  const a = document.createElement("a");
  a.href = "/events/" + encodeURIComponent(ev.event_id);
  a.textContent = text;
  return a;
}

function eventRow(ev) {
  // built with textContent only: nothing from an event is ever parsed as HTML
  const row = document.createElement("tr");
  row.dataset.event = ev.event_id;
  row.className = "fresh";
  const picture = ev.urls.crop || ev.urls.snapshot;
  if (picture) {
    const img = document.createElement("img");
    img.className = "thumb"; img.src = picture; img.alt = "";
    const a = link(ev, ""); a.appendChild(img); cell(row, a);
  } else cell(row, "");
  cell(row, ev.camera);
  const label = link(ev, ev.label || "?");
  const labelCell = cell(row, label);
  if (ev.track_id !== null) {
    const id = document.createElement("span"); id.className = "muted"; id.textContent = " #" + ev.track_id;
    labelCell.appendChild(id);
  }
  cell(row, ev.plate).className = "plate";
  cell(row, ev.agreement);
  if (ev.badge) {
    const b = document.createElement("span");
    b.className = "badge " + (ev.badge.deny ? "deny" : "allow"); b.textContent = ev.badge.text;
    cell(row, b);
  } else cell(row, "");
  cell(row, ev.zones.join(", "));
  cell(row, ev.start);
  cell(row, ev.end || "ongoing");
  return row;
}

function liveEvents(table) {
  const body = table.querySelector("tbody");
  const source = new EventSource(table.dataset.stream);
  source.addEventListener("row", msg => {
    const ev = JSON.parse(msg.data);
    const old = body.querySelector(`tr[data-event="${CSS.escape(ev.event_id)}"]`);
    const row = eventRow(ev);
    if (old) old.replaceWith(row);
    else {
      body.insertBefore(row, body.firstChild);
      const total = document.getElementById("total");
      if (total) total.textContent = String(Number(total.textContent) + 1);
    }
  });
}

function startLiveViews() {
  // after the page's load event: an MJPEG stream never finishes loading, so it must not hold the page's load
  for (const img of document.querySelectorAll("img.live[data-src]")) img.src = img.dataset.src;
}

const page = document.body.dataset.page;
if (page === "cameras") {
  if (document.readyState === "complete") startLiveViews(); else window.addEventListener("load", startLiveViews);
  setInterval(refreshTiles, 2000);
}
const table = document.getElementById("events");
if (table && table.dataset.live === "yes") liveEvents(table);
