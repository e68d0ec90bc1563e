// The operator dashboard's few lines of script (bap/dashboard.py): each panel refreshes itself by fetching its
// server-rendered fragment every few seconds and replacing its body; charts are drawn with the vendored
// Chart.js from the JSON each fragment carries. Forms post normally (with the session's CSRF token).
(function () {
  "use strict";

  var charts = new Map(); // canvas id -> Chart
  var lastHtml = new Map(); // panel id -> the fragment last shown

  var COLOURS = {
    target: "#1f2937",
    covered: "#2563eb",
    delivered: "#16a34a",
    baseline: "rgba(148, 163, 184, 0.7)",
    planned: "#2563eb",
    price: "#d97706",
    carbon: "#7c3aed",
  };

  function line(label, data, colour, axis, dashed) {
    return {
      type: "line",
      label: label,
      data: data,
      borderColor: colour,
      backgroundColor: colour,
      borderWidth: 2,
      pointRadius: 2,
      borderDash: dashed ? [6, 4] : [],
      yAxisID: axis,
      spanGaps: true,
    };
  }

  function bar(label, data, colour) {
    return { type: "bar", label: label, data: data, backgroundColor: colour, yAxisID: "kw" };
  }

  function outline(label, data, colour) {
    return {
      type: "bar",
      label: label,
      data: data,
      backgroundColor: "rgba(0, 0, 0, 0)",
      borderColor: colour,
      borderWidth: 2,
      yAxisID: "kw",
    };
  }

  function axis(title, position, ownGrid) {
    return {
      position: position,
      beginAtZero: true,
      title: { display: true, text: title },
      grid: { drawOnChartArea: ownGrid },
    };
  }

  var BUILDERS = {
    slots: function (d) {
      var sets = [outline("target kW", d.target_kw, COLOURS.target), bar("covered kW", d.covered_kw, COLOURS.covered)];
      if (d.delivered_kw) sets.push(bar("delivered kW", d.delivered_kw, COLOURS.delivered));
      return { labels: d.labels, datasets: sets, scales: { kw: axis("kW", "left", true) } };
    },
    loadshift: function (d) {
      return {
        labels: d.labels,
        datasets: [
          bar("baseline kW (run at release)", d.baseline_kw, COLOURS.baseline),
          line("optimised kW", d.planned_kw, COLOURS.planned, "kw", false),
          line("price £/MWh", d.price_gbp_per_mwh, COLOURS.price, "price", true),
          line("carbon gCO₂/kWh", d.carbon_g_per_kwh, COLOURS.carbon, "carbon", true),
        ],
        scales: {
          kw: axis("kW", "left", true),
          price: axis("£/MWh", "right", false),
          carbon: axis("gCO₂/kWh", "right", false),
        },
      };
    },
  };

  function draw(canvas) {
    var source = document.getElementById(canvas.dataset.source);
    var build = BUILDERS[canvas.dataset.chart];
    if (!source || !build || typeof Chart === "undefined") return;
    var spec = build(JSON.parse(source.textContent));
    var old = charts.get(canvas.id);
    if (old) old.destroy();
    charts.set(
      canvas.id,
      new Chart(canvas, {
        type: "bar",
        data: { labels: spec.labels, datasets: spec.datasets },
        options: {
          animation: false,
          responsive: true,
          maintainAspectRatio: false,
          interaction: { mode: "index", intersect: false },
          scales: spec.scales,
          plugins: { legend: { position: "bottom" } },
        },
      })
    );
  }

  function drawAll(root) {
    root.querySelectorAll("canvas[data-chart]").forEach(draw);
  }

  function forget(root) {
    root.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      var old = charts.get(canvas.id);
      if (old) old.destroy();
      charts.delete(canvas.id);
    });
  }

  function busy(panel) {
    // Someone is typing in this panel (a reason, a date): leave it alone until they are done.
    return panel.contains(document.activeElement) && document.activeElement !== document.body
      || panel.dataset.dirty === "1";
  }

  function stamp(panel, text) {
    var el = panel.querySelector(".updated");
    if (el) el.textContent = text;
  }

  function refresh(panel) {
    if (busy(panel)) return Promise.resolve();
    return fetch(panel.dataset.fragment, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (r) {
        if (r.status === 401) {
          window.location.assign(r.headers.get("X-Dashboard-Login") || "/dashboard/login");
          return null;
        }
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.text();
      })
      .then(function (html) {
        if (html === null || busy(panel)) return;
        panel.classList.remove("stale");
        stamp(panel, "· " + new Date().toISOString().slice(11, 19) + " UTC");
        if (lastHtml.get(panel.id) === html) return;
        lastHtml.set(panel.id, html);
        var body = panel.querySelector(".panel-body");
        forget(body);
        body.innerHTML = html;
        drawAll(body);
      })
      .catch(function () {
        panel.classList.add("stale");
        stamp(panel, "· not updated (retrying)");
      });
  }

  function loadInto(form) {
    var target = document.getElementById(form.dataset.into);
    if (!target) return;
    target.textContent = "working…";
    var url = form.action + "?" + new URLSearchParams(new FormData(form)).toString();
    fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (r) {
        return r.text().then(function (t) {
          return { ok: r.ok, text: t };
        });
      })
      .then(function (res) {
        if (res.ok) target.innerHTML = res.text;
        else target.textContent = res.text;
      })
      .catch(function (e) {
        target.textContent = "failed: " + e.message;
      });
  }

  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (form.dataset && form.dataset.into) {
      ev.preventDefault();
      loadInto(form);
    }
  });

  document.addEventListener("input", function (ev) {
    var panel = ev.target.closest && ev.target.closest(".panel");
    if (panel && ev.target.value !== "") panel.dataset.dirty = "1";
    else if (panel) delete panel.dataset.dirty;
  });

  function start() {
    var panels = document.querySelectorAll(".panel[data-fragment]");
    panels.forEach(function (panel) {
      drawAll(panel);
      if (panel.dataset.lazy) refresh(panel);
      // a slow safety net for what lives elsewhere (the ledger, the BPPs' schedules); changes here come as events
      var every = Math.max(2, parseInt(panel.dataset.refreshS || "10", 10)) * 3000;
      window.setInterval(function () {
        if (!document.hidden) refresh(panel);
      }, every);
    });
    // Server-sent events: the BAP says when what the panels show has changed; every panel re-fetches then.
    if (window.EventSource && document.body.dataset.events) {
      var stream = new EventSource(document.body.dataset.events);
      stream.addEventListener("changed", function () {
        panels.forEach(function (panel) {
          refresh(panel);
        });
      });
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
