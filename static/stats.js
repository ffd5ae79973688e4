// Live stats: polls /api/stats (the server keeps the last five minutes) and draws each
// series as a line on a canvas. No libraries.
"use strict";

const KEYS = ["clients", "messages_per_sec", "deliveries_per_sec"];
const WINDOW_MS = 5 * 60 * 1000;
const POLL_MS = 1000;
const statusEl = document.getElementById("status");

function fmt(v) {
  if (v >= 10000) return Math.round(v).toLocaleString();
  if (v >= 100) return Math.round(v).toString();
  return (Math.round(v * 10) / 10).toString();
}

function draw(key, samples, now) {
  const canvas = document.getElementById("plot-" + key);
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  canvas.width = w * dpr;
  canvas.height = h * dpr;
  const ctx = canvas.getContext("2d");
  ctx.scale(dpr, dpr);
  ctx.clearRect(0, 0, w, h);
  const max = Math.max(1, ...samples.map((s) => s[key]));
  ctx.strokeStyle = "#dde1e6";
  ctx.beginPath();
  ctx.moveTo(0, h - 0.5);
  ctx.lineTo(w, h - 0.5);
  ctx.stroke();
  ctx.strokeStyle = "#1565c0";
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  samples.forEach((s, i) => {
    const x = w - ((now - s.t) / WINDOW_MS) * w;
    const y = h - 2 - (s[key] / max) * (h - 6);
    if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
  });
  ctx.stroke();
  document.getElementById("scale-" + key).textContent = "max " + fmt(max);
  const last = samples.length ? samples[samples.length - 1][key] : 0;
  document.getElementById("now-" + key).textContent = fmt(last);
}

async function poll() {
  try {
    const resp = await fetch("/api/stats", { cache: "no-store" });
    if (!resp.ok) throw new Error("HTTP " + resp.status);
    const data = await resp.json();
    const samples = data.samples;
    const now = samples.length ? samples[samples.length - 1].t : Date.now();
    for (const key of KEYS) draw(key, samples, now);
    statusEl.className = "status connected";
    statusEl.textContent = "live";
  } catch (e) {
    statusEl.className = "status disconnected";
    statusEl.textContent = "server unreachable";
  }
  setTimeout(poll, POLL_MS);
}

poll();
