// The release page: guardrail charts (uPlot) from /releases/<id>/judgements, and live updates
// from /releases/<id>/events (server-sent events). `window.pledgerPage` says what was drawn
// and received, for people debugging the page and for the browser test.
(function () {
  "use strict";
  var root = document.getElementById("release");
  if (!root) return;
  var release = root.getAttribute("data-release");
  var base = "/releases/" + encodeURIComponent(release);
  var state = { drawn: {}, live_updates: 0, chart_loads: 0, connected: false, points: 0 };
  window.pledgerPage = state;
  var plots = {};

  var COLORS = {
    candidate: "#c2410c",
    control: "#1d4ed8",
    ceiling: "#7f1d1d",
    excess: "#c2410c",
    band: "rgba(194, 65, 12, 0.15)",
    zero: "#7f1d1d",
    stage: "#57606a",
  };

  function fmt(unit) {
    return function (u, v) {
      if (v == null) return "–";
      if (unit === "rate") return (v * 100).toFixed(2) + "%";
      if (unit === "ms") return v.toFixed(0) + " ms";
      return v.toFixed(1);
    };
  }

  function width(el) {
    return Math.max(260, Math.min(el.clientWidth || 600, 900));
  }

  // Vertical lines, labelled in text: where each stage visit began, and where the first breach
  // was judged.
  function markers(data) {
    function line(u, at, color, dash, label, row) {
      var x = u.valToPos(at, "x", true);
      var ctx = u.ctx;
      ctx.save();
      ctx.strokeStyle = color;
      ctx.setLineDash(dash);
      ctx.beginPath();
      ctx.moveTo(x, u.bbox.top);
      ctx.lineTo(x, u.bbox.top + u.bbox.height);
      ctx.stroke();
      ctx.fillStyle = color;
      ctx.font = Math.round(11 * devicePixelRatio) + "px sans-serif";
      ctx.fillText(label, x + 4, u.bbox.top + (12 + 13 * row) * devicePixelRatio);
      ctx.restore();
    }
    return {
      hooks: {
        draw: [
          function (u) {
            (data.stages || []).forEach(function (s, i) {
              if (i > 0) line(u, s[0], COLORS.stage, [1, 3], "stage " + s[1], 1);
            });
            if (data.breached_at != null) line(u, data.breached_at, COLORS.zero, [2, 3], "breach", 0);
          },
        ],
      },
    };
  }

  function valuesOpts(c, data, w) {
    return {
      title: c.guardrail + ": values",
      width: w,
      height: 200,
      plugins: [markers(data)],
      scales: { x: { time: true } },
      axes: [{}, { values: function (u, vals) { return vals.map(function (v) { return fmt(c.unit)(u, v); }); }, size: 80 }],
      series: [
        {},
        { label: "candidate", stroke: COLORS.candidate, width: 2, value: fmt(c.unit) },
        { label: "control", stroke: COLORS.control, width: 2, dash: [6, 4], value: fmt(c.unit) },
        { label: "ceiling (" + c.bound + ")", stroke: COLORS.ceiling, width: 1.5, dash: [2, 3], value: fmt(c.unit) },
      ],
    };
  }

  function testOpts(c, data, w) {
    return {
      title: c.guardrail + ": test (breach when the interval's lower edge is above 0)",
      width: w,
      height: 200,
      plugins: [markers(data)],
      scales: { x: { time: true } },
      axes: [{}, { size: 80 }],
      bands: [{ series: [3, 2], fill: COLORS.band }],
      series: [
        {},
        { label: "excess over the bound", stroke: COLORS.excess, width: 2 },
        { label: "interval lower edge", stroke: COLORS.excess, width: 1, dash: [4, 3] },
        { label: "interval upper edge", stroke: COLORS.excess, width: 1, dash: [4, 3] },
        { label: "threshold (0: the bound)", stroke: COLORS.zero, width: 1.5, dash: [8, 4] },
      ],
    };
  }

  function count(series) {
    var n = 0;
    for (var i = 0; i < series.length; i++) if (series[i] != null) n++;
    return n;
  }

  function draw(data) {
    var host = document.getElementById("charts");
    var status = document.getElementById("charts-status");
    state.points = data.points;
    if (!data.charts.length) {
      status.textContent = "No judgement yet: the charts appear once the canary monitor judges this release's rollout.";
      return;
    }
    status.textContent = data.points + " judgement points" +
      (data.skipped ? "; " + data.skipped + " messages on the history subject were not judgement points and were skipped" : "") + ".";
    data.charts.forEach(function (c) {
      var key = c.guardrail + "/" + c.bound;
      var zero = data.t.map(function () { return 0; });
      var values = [data.t, c.candidate, c.control, c.ceiling];
      var test = [data.t, c.excess, c.lower, c.upper, zero];
      var box = host.querySelector('[data-chart="' + key + '"]');
      if (!box) {
        box = document.createElement("figure");
        box.className = "chart";
        box.setAttribute("data-chart", key);
        var cap = document.createElement("figcaption");
        box.appendChild(cap);
        var v = document.createElement("div");
        var t = document.createElement("div");
        box.appendChild(v);
        box.appendChild(t);
        host.appendChild(box);
        var w = width(host);
        plots[key] = {
          values: new uPlot(valuesOpts(c, data, w), values, v),
          test: new uPlot(testOpts(c, data, w), test, t),
        };
      } else {
        plots[key].values.setData(values);
        plots[key].test.setData(test);
      }
      box.setAttribute("data-breached", c.breached.length && c.breached[c.breached.length - 1] ? "true" : "false");
      box.querySelector("figcaption").textContent = c.guardrail + " (" + c.bound + "): " + c.latest;
      state.drawn[key] = { candidate: count(c.candidate), control: count(c.control), excess: count(c.excess), interval: count(c.lower) };
    });
  }

  var loading = false, again = false;
  function loadCharts() {
    if (loading) { again = true; return; }
    loading = true;
    fetch(base + "/judgements", { cache: "no-store" })
      .then(function (r) { return r.json(); })
      .then(function (d) { state.chart_loads++; draw(d); })
      .catch(function (e) { document.getElementById("charts-status").textContent = "Could not load the judgement history: " + e; })
      .then(function () { loading = false; if (again) { again = false; loadCharts(); } });
  }

  window.addEventListener("resize", function () {
    var w = width(document.getElementById("charts"));
    Object.keys(plots).forEach(function (k) {
      plots[k].values.setSize({ width: w, height: 200 });
      plots[k].test.setSize({ width: w, height: 200 });
    });
  });

  loadCharts();
  if (window.EventSource) {
    var events = new EventSource(base + "/events");
    events.onopen = function () { state.connected = true; };
    events.onerror = function () { state.connected = false; };
    events.addEventListener("live", function (e) {
      document.getElementById("live").innerHTML = e.data;
      state.live_updates++;
    });
    events.addEventListener("chart", loadCharts);
  }
})();
