//! The HTML of the status page, server-rendered so it reads with JavaScript off. `page.js`
//! renders the same markup from `/status` every 2 s; keep the two in step.
//!
//! Every string from the configuration or the API goes through [`escape`].

use std::fmt::Write;

use super::{Certificate, LoadBalancer, Service, Status, Target};

const TEMPLATE: &str = include_str!("page.html");
const STYLE: &str = include_str!("page.css");
const SCRIPT: &str = include_str!("page.js");

/// Days before expiry from which a certificate is shown in red.
pub const EXPIRY_WARNING_DAYS: i64 = 14;

/// HTML-escapes text for element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// The whole page for `status`.
pub fn page(status: &Status) -> String {
    // The template is ours; the markers are replaced in page order, the body (the only part
    // with outside data) last, so nothing in it is ever taken for a marker.
    let (head, rest) = TEMPLATE.split_once("{{style}}").unwrap_or((TEMPLATE, ""));
    let (middle, rest) = rest.split_once("{{body}}").unwrap_or((rest, ""));
    let (between, tail) = rest.split_once("{{script}}").unwrap_or((rest, ""));
    let mut out = String::with_capacity(TEMPLATE.len() + STYLE.len() + SCRIPT.len() + 16_384);
    out.push_str(head);
    out.push_str(STYLE);
    out.push_str(middle);
    out.push_str(&body(status));
    out.push_str(between);
    out.push_str(SCRIPT);
    out.push_str(tail);
    out
}

pub fn rate(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

pub fn percent(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// Intervals a sparkline spans at least (one minute), so a young series is not a speck.
const SPARK_MIN_SPAN: usize = 30;

/// An inline SVG sparkline of `points` (req/s, oldest first): a line over a light area,
/// right-aligned so the newest point is always at the right edge.
pub fn sparkline(points: &[f64]) -> String {
    const W: f64 = 120.0;
    const H: f64 = 24.0;
    let max = points.iter().copied().fold(1.0_f64, f64::max);
    let n = points.len().saturating_sub(1);
    let span = n.max(SPARK_MIN_SPAN);
    let step = W / span as f64;
    let offset = W * (span - n) as f64 / span as f64;
    let mut line = String::new();
    for (i, p) in points.iter().enumerate() {
        let x = offset + step * i as f64;
        let y = H - 1.0 - (p / max) * (H - 2.0);
        let _ = write!(line, "{x:.1},{y:.1} ");
    }
    let line = line.trim_end();
    let area = if line.is_empty() {
        String::new()
    } else {
        format!("{offset:.1},{H:.1} {line} {W:.1},{H:.1}")
    };
    format!(
        "<svg class=\"spark\" viewBox=\"0 0 120 24\" width=\"120\" height=\"24\" \
         aria-hidden=\"true\"><polygon points=\"{area}\"/><polyline points=\"{line}\"/></svg>"
    )
}

fn body(s: &Status) -> String {
    let mut o = String::new();
    let targets: usize = s.services.iter().map(|x| x.targets.len()).sum();
    let total_rps: f64 = s.services.iter().map(|x| x.requests_per_second).sum();
    let last = s.last_reload.as_ref().map_or_else(
        || "never".to_string(),
        |r| format!("{} ({})", escape(&r.at), r.source),
    );
    let _ = write!(
        o,
        "<section class=\"summary\">\
         <div class=\"stat\"><span class=\"k\">generation</span><span class=\"v\" id=\"generation\">{}</span></div>\
         <div class=\"stat\"><span class=\"k\">last reload</span><span class=\"v small\">{}</span></div>\
         <div class=\"stat\"><span class=\"k\">load balancers</span><span class=\"v\">{}</span></div>\
         <div class=\"stat\"><span class=\"k\">targets</span><span class=\"v\">{}</span></div>\
         <div class=\"stat\"><span class=\"k\">req/s</span><span class=\"v\" id=\"total-rps\">{}</span></div>\
         </section>",
        s.generation,
        last,
        s.load_balancers.len(),
        targets,
        rate(total_rps)
    );
    if !s.refused_reloads.is_empty() {
        o.push_str("<section class=\"refused\"><h2>Refused reloads</h2><ul>");
        for r in &s.refused_reloads {
            let _ = write!(
                o,
                "<li><time>{}</time> <span class=\"src\">{}</span> {}</li>",
                escape(&r.at),
                r.source,
                escape(r.error.as_deref().unwrap_or(""))
            );
        }
        o.push_str("</ul></section>");
    }

    o.push_str("<h2>Load balancers</h2><section class=\"grid\">");
    if s.load_balancers.is_empty() {
        o.push_str("<p class=\"empty\">No load balancers configured.</p>");
    }
    for lb in &s.load_balancers {
        load_balancer(&mut o, lb);
    }
    o.push_str("</section><h2>Services and targets</h2><section class=\"grid wide\">");
    if s.services.is_empty() {
        o.push_str("<p class=\"empty\">No services in the routing table.</p>");
    }
    for svc in &s.services {
        service(&mut o, svc);
    }
    o.push_str("</section>");
    if !s.certificates.is_empty() {
        certificates(&mut o, &s.certificates);
    }
    o
}

fn load_balancer(o: &mut String, lb: &LoadBalancer) {
    let _ = write!(
        o,
        "<article class=\"card lb\" data-lb=\"{name}\"><header><h3>{name}</h3>\
         <span class=\"badge lb-{state}\">{state}</span></header>",
        name = escape(&lb.name),
        state = escape(&lb.state)
    );
    if lb.listeners.is_empty() {
        o.push_str("<p class=\"empty\">No listener open.</p>");
    } else {
        o.push_str(
            "<table><thead><tr><th>listener</th><th>conns</th><th>rules</th></tr></thead><tbody>",
        );
        for l in &lb.listeners {
            let _ = write!(
                o,
                "<tr><td class=\"mono\">{}/{}</td><td class=\"num\">{}</td><td><ul class=\"rules\">",
                l.port, l.protocol, l.active_connections
            );
            for r in &l.rules {
                let path = if r.path.is_empty() { "/" } else { &r.path };
                let prio = r.priority.map_or_else(String::new, |p| {
                    format!("<span class=\"prio\">#{p}</span> ")
                });
                let _ = write!(
                    o,
                    "<li>{prio}<span class=\"mono\">{}{}</span> → <b>{}</b></li>",
                    escape(&r.host),
                    escape(path),
                    escape(&r.service)
                );
            }
            o.push_str("</ul></td></tr>");
        }
        o.push_str("</tbody></table>");
    }
    o.push_str("</article>");
}

fn service(o: &mut String, svc: &Service) {
    let _ = write!(
        o,
        "<article class=\"card svc\" data-service=\"{name}\"><header><h3>{name}</h3>\
         <span class=\"meta\"><b>{rps}</b> req/s · <b class=\"{errclass}\">{err}</b> 5xx · \
         <b>{sticky}</b> sticky hits</span></header>\
         <table><thead><tr><th>state</th><th>target</th><th>address</th>\
         <th class=\"num\">weight</th><th class=\"num\">req/s</th><th class=\"num\">conn err</th>\
         <th>last 5 min</th></tr></thead><tbody>",
        name = escape(&svc.name),
        rps = rate(svc.requests_per_second),
        err = percent(svc.error_rate),
        errclass = if svc.error_rate > 0.0 { "bad" } else { "" },
        sticky = svc.sticky_hits
    );
    for t in &svc.targets {
        target(o, t);
    }
    o.push_str("</tbody></table></article>");
}

fn target(o: &mut String, t: &Target) {
    let configured = t
        .configured_weight
        .map_or_else(|| "?".to_string(), |w| w.to_string());
    let _ = write!(
        o,
        "<tr data-target=\"{id}\" data-state=\"{state}\">\
         <td><span class=\"state s-{state}\">{state}</span></td>\
         <td class=\"mono\">{id}</td><td class=\"mono dim\">{addr}</td>\
         <td class=\"num\" title=\"effective / configured\">{w} <span class=\"dim\">/ {configured}</span></td>\
         <td class=\"num rps\">{rps}</td><td class=\"num\">{err}</td><td>{spark}</td></tr>",
        id = escape(&t.id),
        state = t.state,
        addr = escape(&t.address),
        w = t.weight,
        rps = rate(t.requests_per_second),
        err = percent(t.error_rate),
        spark = sparkline(&t.history)
    );
}

fn certificates(o: &mut String, certs: &[Certificate]) {
    o.push_str(
        "<h2>Certificates</h2><section class=\"card\"><table><thead><tr><th>name</th><th>CN</th>\
         <th>SANs</th><th>expires</th><th class=\"num\">days left</th></tr></thead><tbody>",
    );
    for c in certs {
        let days = c
            .days_to_expiry
            .map_or_else(|| "?".to_string(), |d| d.to_string());
        let class = match c.days_to_expiry {
            Some(d) if d < EXPIRY_WARNING_DAYS => "num bad",
            _ => "num",
        };
        let _ = write!(
            o,
            "<tr data-cert=\"{}\"><td>{}</td><td class=\"mono\">{}</td><td class=\"mono dim\">{}</td>\
             <td class=\"mono dim\">{}</td><td class=\"{class}\">{days}</td></tr>",
            escape(&c.id),
            escape(&c.name),
            escape(c.cn.as_deref().unwrap_or("")),
            escape(&c.sans.join(", ")),
            escape(c.expires_at.as_deref().unwrap_or("")),
        );
    }
    o.push_str("</tbody></table></section>");
}

#[cfg(test)]
mod tests {
    use super::super::{Listener, Reload, Rule};
    use super::*;

    fn status() -> Status {
        Status {
            version: "0",
            generation: 7,
            now_ms: 0,
            last_reload: None,
            refused_reloads: vec![Reload {
                at: "2026-01-01T00:00:00Z".into(),
                at_ms: 0,
                source: "api",
                generation: None,
                error: Some("port <80> & \"taken\"".into()),
            }],
            load_balancers: vec![LoadBalancer {
                name: "<script>alert(1)</script>".into(),
                state: "active".into(),
                listeners: vec![Listener {
                    port: 8080,
                    protocol: "http",
                    active_connections: 3,
                    rules: vec![Rule {
                        host: "a.example.com".into(),
                        path: "/x?<b>".into(),
                        priority: Some(2),
                        service: "we'b".into(),
                    }],
                }],
            }],
            services: vec![Service {
                name: "we'b".into(),
                requests_per_second: 12.5,
                error_rate: 0.25,
                sticky_hits: 4,
                targets: vec![Target {
                    id: "web-\"1\"".into(),
                    address: "127.0.0.1:9000".into(),
                    state: "maintenance",
                    configured_weight: Some(5),
                    configured_warning_weight: Some(1),
                    weight: 0,
                    requests_per_second: 0.0,
                    error_rate: 0.0,
                    history: vec![0.0, 1.0, 2.0],
                }],
            }],
            certificates: vec![Certificate {
                id: "1c1".into(),
                name: "<cert>".into(),
                cn: Some("a.example.com".into()),
                sans: vec!["a.example.com".into(), "b.example.com".into()],
                expires_at: Some("2026-01-05T00:00:00Z".into()),
                days_to_expiry: Some(3),
            }],
        }
    }

    #[test]
    fn escapes_everything_from_outside() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        let html = page(&status());
        assert!(!html.contains("<script>alert(1)"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("port &lt;80&gt; &amp; &quot;taken&quot;"));
        assert!(html.contains("/x?&lt;b&gt;"));
        assert!(html.contains("data-target=\"web-&quot;1&quot;\""));
        assert!(html.contains("we&#39;b"));
        assert!(html.contains("&lt;cert&gt;"));
        // The embedded script and style are there once each; no marker is left.
        assert_eq!(html.matches("<script>").count(), 1);
        assert!(!html.contains("{{"), "a template marker is left");
    }

    #[test]
    fn renders_targets_states_and_expiry() {
        let html = page(&status());
        assert!(html.contains("data-state=\"maintenance\""));
        assert!(html.contains("s-maintenance"));
        assert!(html.contains("<td class=\"num bad\">3</td>"));
        assert!(html.contains("12.5"));
        assert!(html.contains("25.0%"));
        assert!(html.contains("<polyline"));
        assert!(html.contains("id=\"generation\">7<"));
    }

    #[test]
    fn sparkline_is_right_aligned_and_scaled() {
        let svg = sparkline(&[0.0, 4.0]);
        assert!(
            svg.contains("<polyline points=\"116.0,23.0 120.0,1.0\""),
            "{svg}"
        );
        assert!(svg.contains("<polygon points=\"116.0,24.0 116.0,23.0 120.0,1.0 120.0,24.0\""));
        assert!(sparkline(&[]).contains("<polyline points=\"\""));
        // Five minutes span the whole width.
        let full = sparkline(&[1.0; 150]);
        assert!(full.contains("<polyline points=\"0.0,"), "{full}");
    }

    #[test]
    fn numbers() {
        assert_eq!(rate(0.0), "0.0");
        assert_eq!(rate(3.21), "3.2");
        assert_eq!(rate(1234.4), "1234");
        assert_eq!(percent(0.0123), "1.2%");
    }
}
