// streamq dashboard: live counts and events over server-sent events, and confirmations.
// Plain JavaScript, no build step. Text only ever goes in through textContent.
"use strict";

(function () {
  const body = document.body;
  const statusEl = document.getElementById("live-status");
  const MAX_EVENTS = 50;

  function setStatus(state, text) {
    body.dataset.liveState = state;
    if (statusEl) {
      statusEl.dataset.state = state;
      statusEl.textContent = text;
    }
  }

  // -- confirmations for destructive actions ------------------------------------------
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (ev) {
      if (!window.confirm(form.dataset.confirm)) ev.preventDefault();
    });
  });

  // -- counts -----------------------------------------------------------------------------
  function applyCounts(queue, counts, rates) {
    Object.keys(counts).forEach(function (state) {
      document.querySelectorAll('[data-count="' + CSS.escape(queue + ":" + state) + '"]')
        .forEach(function (el) { el.textContent = String(counts[state]); });
    });
    document.querySelectorAll('[data-paused="' + CSS.escape(queue) + '"]').forEach(function (el) {
      const paused = Boolean(counts.paused);
      el.textContent = paused ? "paused" : "running";
      el.classList.toggle("paused", paused);
      el.classList.toggle("running", !paused);
    });
    ["in", "done", "failed"].forEach(function (key) {
      document.querySelectorAll('[data-rate="' + CSS.escape(queue + ":" + key) + '"]')
        .forEach(function (el) { el.textContent = rates ? String(rates[key]) : "-"; });
    });
  }

  function resync(queues) {
    const qs = queues.map(function (q) { return "queue=" + encodeURIComponent(q); }).join("&");
    return fetch("/api/counts?" + qs, {headers: {Accept: "application/json"}, credentials: "same-origin"})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (!data) return;
        Object.keys(data).forEach(function (q) { applyCounts(q, data[q].counts, data[q].rates); });
        refreshJob();
      });
  }

  // -- the job page ---------------------------------------------------------------------------
  function refreshJob() {
    const job = body.dataset.job, queue = body.dataset.queue;
    if (!job || !queue) return;
    fetch("/api/q/" + encodeURIComponent(queue) + "/jobs/" + encodeURIComponent(job),
          {headers: {Accept: "application/json"}, credentials: "same-origin"})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (info) {
        if (!info) return;
        const set = function (key, text) {
          const el = document.querySelector('[data-job-field="' + key + '"]');
          if (el) el.textContent = text;
        };
        set("state", info.state);
        set("attempts", String(info.attempts));
        set("error", info.error || "-");
        set("finished_at", info.finished_at);
        if (info.progress !== null && info.progress !== undefined) {
          set("progress", typeof info.progress === "number"
            ? Math.round(info.progress * 100) + "%" : JSON.stringify(info.progress));
        }
      });
  }

  // -- events -----------------------------------------------------------------------------------
  function addEvents(queue, events) {
    const list = document.querySelector('#live-events[data-queue="' + CSS.escape(queue) + '"]');
    events.forEach(function (e) {
      if (body.dataset.job && e.job === body.dataset.job) refreshJob();
      if (!list) return;
      const li = document.createElement("li");
      li.className = "ev-" + e.ev;
      const when = document.createElement("time");
      when.textContent = new Date().toLocaleTimeString();
      const name = document.createElement("b");
      name.textContent = e.ev === "action" ? e.act + " by " + e.actor : e.ev;
      li.append(when, " ", name, " ");
      // an action's target is a job for replay and cancel; a schedule or a provider else
      const isJob = e.ev !== "action" || e.act === "replay" || e.act === "cancel";
      if (e.job && e.job !== "*" && !isJob) {
        const target = document.createElement("span");
        target.className = "mono";
        target.textContent = e.job;
        li.append(target);
      } else if (e.job && e.job !== "*") {
        const a = document.createElement("a");
        a.href = "/q/" + encodeURIComponent(queue) + "/jobs/" + encodeURIComponent(e.job);
        a.textContent = e.job;
        a.className = "mono";
        li.append(a);
      }
      if (e.detail) {
        const detail = document.createElement("span");
        detail.className = "hint";
        detail.textContent = " " + e.detail;
        li.append(detail);
      }
      if (e.error) {
        const err = document.createElement("span");
        err.className = "error";
        err.textContent = " " + e.error;
        li.append(err);
      }
      list.prepend(li);
    });
    if (list) while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
  }

  // -- the live connection ------------------------------------------------------------------------
  const live = (body.dataset.live || "").split(",").filter(Boolean);
  if (live.length && window.EventSource) {
    const qs = live.map(function (q) { return "queue=" + encodeURIComponent(q); }).join("&");
    const source = new EventSource("/live?" + qs);
    setStatus("connecting", "live: connecting…");
    source.onopen = function () { setStatus("open", "live"); };
    source.onerror = function () { setStatus("retrying", "live: reconnecting…"); };
    source.addEventListener("counts", function (m) {
      const d = JSON.parse(m.data);
      applyCounts(d.queue, d.counts, d.rates);
      setStatus("open", "live");
    });
    source.addEventListener("events", function (m) {
      const d = JSON.parse(m.data);
      addEvents(d.queue, d.events);
    });
    source.addEventListener("resync", function () {
      body.dataset.resyncs = String(Number(body.dataset.resyncs || 0) + 1);
      resync(live);
    });
    source.addEventListener("problem", function (m) {
      setStatus("problem", "live: " + JSON.parse(m.data).error);
    });
    window.addEventListener("pagehide", function () { source.close(); });
  }
})();
