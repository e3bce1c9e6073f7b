// Polls /status every 2 s and re-renders <main> with the same markup as src/api/status/render.rs.
(function () {
  "use strict";
  var SPARK_MIN_SPAN = 30, EXPIRY_WARNING_DAYS = 14, PERIOD = 2000;
  var main = document.getElementById("status");
  var dot = document.getElementById("live-dot");
  var text = document.getElementById("live-text");
  if (!main || !window.fetch) return;

  function esc(s) {
    return String(s == null ? "" : s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }
  function rate(x) { return x >= 100 ? String(Math.round(x)) : x.toFixed(1); }
  function percent(x) { return (x * 100).toFixed(1) + "%"; }
  function sparkline(points) {
    var W = 120, H = 24, max = 1, i;
    for (i = 0; i < points.length; i++) max = Math.max(max, points[i]);
    var n = Math.max(points.length - 1, 0), span = Math.max(n, SPARK_MIN_SPAN);
    var step = W / span, offset = W * (span - n) / span, c = [];
    for (i = 0; i < points.length; i++) {
      c.push((offset + step * i).toFixed(1) + "," + (H - 1 - (points[i] / max) * (H - 2)).toFixed(1));
    }
    var line = c.join(" ");
    var area = line ? offset.toFixed(1) + "," + H.toFixed(1) + " " + line + " " + W.toFixed(1) + "," + H.toFixed(1) : "";
    return '<svg class="spark" viewBox="0 0 120 24" width="120" height="24" aria-hidden="true">' +
      '<polygon points="' + area + '"/><polyline points="' + line + '"/></svg>';
  }

  function lb(l) {
    var o = '<article class="card lb" data-lb="' + esc(l.name) + '"><header><h3>' + esc(l.name) +
      '</h3><span class="badge lb-' + esc(l.state) + '">' + esc(l.state) + "</span></header>";
    if (!l.listeners.length) return o + '<p class="empty">No listener open.</p></article>';
    o += "<table><thead><tr><th>listener</th><th>conns</th><th>rules</th></tr></thead><tbody>";
    l.listeners.forEach(function (li) {
      o += '<tr><td class="mono">' + li.port + "/" + esc(li.protocol) + '</td><td class="num">' +
        li.activeConnections + '</td><td><ul class="rules">';
      li.rules.forEach(function (r) {
        var prio = r.priority == null ? "" : '<span class="prio">#' + r.priority + "</span> ";
        o += "<li>" + prio + '<span class="mono">' + esc(r.host) + esc(r.path || "/") +
          "</span> → <b>" + esc(r.service) + "</b></li>";
      });
      o += "</ul></td></tr>";
    });
    return o + "</tbody></table></article>";
  }

  function target(t) {
    var st = esc(t.state);
    return '<tr data-target="' + esc(t.id) + '" data-state="' + st + '">' +
      '<td><span class="state s-' + st + '">' + st + "</span></td>" +
      '<td class="mono">' + esc(t.id) + '</td><td class="mono dim">' + esc(t.address) + "</td>" +
      '<td class="num" title="effective / configured">' + t.weight + ' <span class="dim">/ ' +
      (t.configuredWeight == null ? "?" : t.configuredWeight) + "</span></td>" +
      '<td class="num rps">' + rate(t.requestsPerSecond) + '</td><td class="num">' +
      percent(t.errorRate) + "</td><td>" + sparkline(t.history) + "</td></tr>";
  }

  function service(s) {
    var o = '<article class="card svc" data-service="' + esc(s.name) + '"><header><h3>' + esc(s.name) +
      '</h3><span class="meta"><b>' + rate(s.requestsPerSecond) + '</b> req/s · <b class="' +
      (s.errorRate > 0 ? "bad" : "") + '">' + percent(s.errorRate) + "</b> 5xx · <b>" + s.stickyHits +
      "</b> sticky hits</span></header>" +
      "<table><thead><tr><th>state</th><th>target</th><th>address</th>" +
      '<th class="num">weight</th><th class="num">req/s</th><th class="num">conn err</th>' +
      "<th>last 5 min</th></tr></thead><tbody>";
    s.targets.forEach(function (t) { o += target(t); });
    return o + "</tbody></table></article>";
  }

  function certificates(certs) {
    var o = '<h2>Certificates</h2><section class="card"><table><thead><tr><th>name</th><th>CN</th>' +
      '<th>SANs</th><th>expires</th><th class="num">days left</th></tr></thead><tbody>';
    certs.forEach(function (c) {
      var d = c.daysToExpiry;
      o += '<tr data-cert="' + esc(c.id) + '"><td>' + esc(c.name) + '</td><td class="mono">' + esc(c.cn) +
        '</td><td class="mono dim">' + esc(c.sans.join(", ")) + '</td><td class="mono dim">' +
        esc(c.expiresAt) + '</td><td class="' + (d != null && d < EXPIRY_WARNING_DAYS ? "num bad" : "num") +
        '">' + (d == null ? "?" : d) + "</td></tr>";
    });
    return o + "</tbody></table></section>";
  }

  function body(s) {
    var targets = 0, total = 0;
    s.services.forEach(function (x) { targets += x.targets.length; total += x.requestsPerSecond; });
    var last = s.lastReload ? esc(s.lastReload.at) + " (" + esc(s.lastReload.source) + ")" : "never";
    var o = '<section class="summary">' +
      '<div class="stat"><span class="k">generation</span><span class="v" id="generation">' + s.generation + "</span></div>" +
      '<div class="stat"><span class="k">last reload</span><span class="v small">' + last + "</span></div>" +
      '<div class="stat"><span class="k">load balancers</span><span class="v">' + s.loadBalancers.length + "</span></div>" +
      '<div class="stat"><span class="k">targets</span><span class="v">' + targets + "</span></div>" +
      '<div class="stat"><span class="k">req/s</span><span class="v" id="total-rps">' + rate(total) + "</span></div>" +
      "</section>";
    if (s.refusedReloads.length) {
      o += '<section class="refused"><h2>Refused reloads</h2><ul>';
      s.refusedReloads.forEach(function (r) {
        o += "<li><time>" + esc(r.at) + '</time> <span class="src">' + esc(r.source) + "</span> " +
          esc(r.error) + "</li>";
      });
      o += "</ul></section>";
    }
    o += '<h2>Load balancers</h2><section class="grid">';
    if (!s.loadBalancers.length) o += '<p class="empty">No load balancers configured.</p>';
    s.loadBalancers.forEach(function (l) { o += lb(l); });
    o += '</section><h2>Services and targets</h2><section class="grid wide">';
    if (!s.services.length) o += '<p class="empty">No services in the routing table.</p>';
    s.services.forEach(function (x) { o += service(x); });
    o += "</section>";
    if (s.certificates.length) o += certificates(s.certificates);
    return o;
  }

  // Rows whose state changed since the last poll flash once.
  function states() {
    var m = {};
    main.querySelectorAll("tr[data-target]").forEach(function (tr) {
      m[tr.closest("[data-service]").getAttribute("data-service") + "\u0000" +
        tr.getAttribute("data-target")] = tr.getAttribute("data-state");
    });
    return m;
  }

  function live(ok, msg) {
    dot.className = "dot" + (ok ? "" : " err");
    text.textContent = msg;
  }

  function poll() {
    fetch("status", { cache: "no-store", credentials: "same-origin" })
      .then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      })
      .then(function (s) {
        var before = states();
        main.innerHTML = body(s);
        var after = states();
        main.querySelectorAll("tr[data-target]").forEach(function (tr) {
          var k = tr.closest("[data-service]").getAttribute("data-service") + "\u0000" +
            tr.getAttribute("data-target");
          if (before[k] && before[k] !== after[k]) tr.classList.add("flash");
        });
        live(true, "live · updated " + new Date().toLocaleTimeString());
      })
      .catch(function (e) { live(false, "update failed: " + e.message); })
      .then(function () { setTimeout(poll, PERIOD); });
  }
  poll();
})();
