/*! cems-tag: the Segment-compatible browser tag of CEMS. See docs/tag.md. */
(function (window, document) {
  "use strict";
  var VERSION = "0.1.0";
  var ANON_KEY = "cems_aid"; // cookie and localStorage
  var USER_KEY = "cems_uid"; // localStorage
  var HASH_KEY = "cems_uhash"; // localStorage: the user hash that proves cems_uid (docs/tag.md)
  var TWO_YEARS = 63072000; // seconds

  try {
    var queued = window.cems;
    if (queued && queued.loaded) return; // the tag is on the page twice

    // --- Endpoint: where this script was loaded from. ---
    var script = document.currentScript;
    if (!script || !script.getAttribute("data-write-key")) {
      document.querySelectorAll("script[data-write-key]").forEach(function (s) {
        if (/\/tag\.js([?#]|$)/.test(s.src)) script = s;
      });
    }
    if (!script) return;
    var writeKey = script.getAttribute("data-write-key");
    var endpoint = (
      script.getAttribute("data-endpoint") || script.src.replace(/\/tag\.js([?#].*)?$/, "")
    ).replace(/\/+$/, "");
    if (!writeKey || !endpoint) return;

    // --- Ids ---
    var uuid = function () {
      var c = window.crypto;
      if (c && c.randomUUID) return c.randomUUID();
      var b = new Uint8Array(16);
      if (c && c.getRandomValues) c.getRandomValues(b);
      else for (var j = 0; j < 16; j++) b[j] = (Math.random() * 256) | 0;
      b[6] = (b[6] & 15) | 64; // version 4
      b[8] = (b[8] & 63) | 128; // RFC 4122 variant
      var h = "";
      for (var n = 0; n < 16; n++) h += (n === 4 || n === 6 || n === 8 || n === 10 ? "-" : "") + (b[n] + 256).toString(16).slice(1);
      return h;
    };
    var valid = function (id) { return typeof id === "string" && /^[\w.:@+-]{1,200}$/.test(id); };

    // Storage may be blocked: every access is guarded.
    var load = function (k) { try { return localStorage.getItem(k); } catch (e) { return null; } };
    var save = function (k, v) {
      try { v == null ? localStorage.removeItem(k) : localStorage.setItem(k, v); } catch (e) {}
    };
    var readCookie = function (k) {
      try {
        var m = document.cookie.match(new RegExp("(?:^|;\\s*)" + k + "=([^;]*)"));
        return m ? decodeURIComponent(m[1]) : null;
      } catch (e) { return null; }
    };
    var writeCookie = function (k, v) {
      try {
        document.cookie = k + "=" + encodeURIComponent(v) + "; path=/; max-age=" + TWO_YEARS +
          "; SameSite=Lax" + (window.location.protocol === "https:" ? "; Secure" : "");
      } catch (e) {}
    };

    var anonymousId, userId = load(USER_KEY) || null, userHash = userId ? load(HASH_KEY) : null;
    var saveAnonymousId = function (id) {
      writeCookie(ANON_KEY, (anonymousId = id));
      save(ANON_KEY, id);
    };
    // Cookie, else localStorage; saved back to both.
    var cookieId = readCookie(ANON_KEY), storedId = load(ANON_KEY);
    saveAnonymousId(valid(cookieId) ? cookieId : valid(storedId) ? storedId : uuid());
    // Numbers become strings (as in Segment); other non-strings are ignored. The hash is the shop
    // server's proof that this user is signed in; without it the id is only a claim.
    var setUser = function (id, hash) {
      if (typeof id === "number") id = String(id);
      if (typeof id !== "string" || !id) return false;
      if (id !== userId || typeof hash === "string") {
        save(HASH_KEY, (userHash = typeof hash === "string" && hash ? hash : null));
      }
      save(USER_KEY, (userId = id));
      return true;
    };
    // A signed-in customer rendered into the page by the shop's server (data-user-id/-hash).
    var pageUser = script.getAttribute("data-user-id");
    if (pageUser) setUser(pageUser, script.getAttribute("data-user-hash") || undefined);

    // --- Landing URL: utm_* become context.campaign (as in Segment); linkToken: see the end ---
    var campaign = null, linkToken;
    var handleLandingParams = function (params) {
      params.forEach(function (value, name) {
        var m = /^utm_(\w+)$/.exec(name);
        if (m) (campaign = campaign || {})[m[1] === "campaign" ? "name" : m[1]] = value;
        if (name === "linkToken") linkToken = value;
      });
    };
    try { handleLandingParams(new URLSearchParams(window.location.search)); } catch (e) {}

    // --- Building and sending messages ---
    var now = function () { return new Date().toISOString(); };
    var isObject = function (x) { return !!x && typeof x === "object" && !Array.isArray(x); };
    var pageFacts = function () {
      var l = window.location, t = function (u) { return u.replace(/(linkToken=)[^&#]*/, "$1-"); };
      return { path: l.pathname, referrer: document.referrer, search: t(l.search), title: document.title, url: t(l.href) };
    };
    var context = function () {
      var timezone;
      try { timezone = Intl.DateTimeFormat().resolvedOptions().timeZone; } catch (e) {}
      var c = { page: pageFacts(), userAgent: navigator.userAgent, locale: navigator.language, timezone: timezone,
        library: { name: "cems-tag", version: VERSION } };
      if (campaign) c.campaign = campaign;
      if (userId && userHash) c.userHash = userHash;
      return c;
    };

    var post = function (url, json) {
      try {
        // text/plain: no CORS preflight; beacons survive navigation.
        if (navigator.sendBeacon && navigator.sendBeacon(url, new Blob([json], { type: "text/plain" }))) return;
      } catch (e) {}
      if (window.fetch) {
        window.fetch(url, {
          method: "POST", body: json, keepalive: true, credentials: "omit", mode: "cors",
          headers: { "Content-Type": "text/plain" },
        }).catch(function () {});
      }
    };

    var send = function (type, fields) {
      var message = {
        type: type,
        messageId: "cems-" + uuid(),
        anonymousId: anonymousId,
        timestamp: now(),
        context: context(),
      };
      if (userId) message.userId = userId;
      for (var k in fields) if (fields[k] !== undefined) message[k] = fields[k];
      message.sentAt = now();
      // The key goes in the URL: the endpoint checks it before it reads the body.
      post(endpoint + "/v1/" + type + "?writeKey=" + encodeURIComponent(writeKey), JSON.stringify(message));
    };

    // --- The public API ---
    var api = {
      loaded: true,
      VERSION: VERSION,
      track: function (event, properties) {
        if (typeof event !== "string" || !event) return;
        send("track", { event: event, properties: isObject(properties) ? properties : {} });
      },
      // identify(userId, traits, {userHash}) or identify(traits)
      identify: function (id, traits, options) {
        if (isObject(id)) traits = id;
        else setUser(id, isObject(options) ? options.userHash : undefined);
        send("identify", { traits: isObject(traits) ? traits : {} });
      },
      // page(), page(name), page(properties) or page(name, properties)
      page: function (name, properties) {
        if (isObject(name)) { properties = name; name = undefined; }
        var props = pageFacts();
        if (isObject(properties)) for (var k in properties) props[k] = properties[k];
        send("page", { name: typeof name === "string" && name ? name : undefined, properties: props });
      },
      // alias(newUserId, {userHash}): link the current id (user id, else anonymous id) to it.
      alias: function (id, options) {
        var previous = userId || anonymousId;
        if (setUser(id, isObject(options) ? options.userHash : undefined)) send("alias", { previousId: previous });
      },
      // Forget the user (e.g. on logout): new anonymous id.
      reset: function () {
        save(USER_KEY, (userId = null));
        save(HASH_KEY, (userHash = null));
        saveAnonymousId(uuid());
      },
      anonymousId: function () { return anonymousId; },
      userId: function () { return userId; },
      ready: function (callback) { if (typeof callback === "function") callback(api); },
    };
    // Calls never throw into the page.
    Object.keys(api).forEach(function (name) {
      var f = api[name];
      if (typeof f !== "function") return;
      api[name] = function () {
        try { return f.apply(api, arguments); } catch (e) {}
      };
    });

    // --- On-site messages (docs/web.md): one fetch per page view, once the page has loaded. ---
    var NONE_UNTIL = "cems_wn", DISMISSED = "cems_wd", SHOWN = "cems_ws"; // sessionStorage
    var sload = function (k) { try { return sessionStorage.getItem(k) || ""; } catch (e) { return ""; } };
    var ssave = function (k, v) { try { sessionStorage.setItem(k, v); } catch (e) {} };
    var http = function (u, https) { return typeof u === "string" && (https ? /^https:\/\//i : /^https?:\/\//i).test(u); };
    var el = function (parent, tag, cls, text) {
      var e = document.createElement(tag);
      if (cls) e.className = cls;
      if (text) e.textContent = text; // text only, never HTML
      if (parent) parent.appendChild(e);
      return e;
    };
    var STYLE = ".m{box-sizing:border-box;font:15px/1.5 system-ui,sans-serif;color:#222;background:#fff;" +
      "padding:14px 44px 14px 16px;box-shadow:0 2px 12px rgba(0,0,0,.25);position:relative;z-index:1}" +
      ".banner,.slide_in,.modal,.bd{position:fixed;z-index:2147483647}.banner{left:0;right:0;top:0}" +
      ".bottom{top:auto;bottom:0}.slide_in{right:16px;bottom:16px;width:min(360px,90vw);border-radius:8px}" +
      ".modal{left:50%;top:50%;transform:translate(-50%,-50%);width:min(480px,90vw);border-radius:8px}" +
      ".bd{inset:0;background:rgba(0,0,0,.45)}.x{position:absolute;top:6px;right:8px;border:0;background:none;" +
      "font-size:22px;line-height:1;cursor:pointer;color:inherit}img{display:block;max-width:100%;margin-bottom:8px}" +
      ".t{display:block;font-weight:700}p{margin:4px 0 0}a{display:inline-block;margin:10px 8px 0 0;" +
      "padding:6px 16px;border-radius:4px;background:#222;color:#fff;text-decoration:none}";
    var showing = false;
    var fire = function (name, detail) {
      try { document.dispatchEvent(new CustomEvent(name, { detail: detail })); } catch (e) {}
    };
    var show = function (d) {
      var m = d.message, kind = m.kind, report = function (k, b) {
        if (d.token) post(endpoint + "/v1/web/events", JSON.stringify({ token: d.token, kind: k, button: b }));
      };
      if (showing || sload(DISMISSED).indexOf(d.id) >= 0) return false;
      // Inline only into an element the shop reserved for it, by name (never a selector from the message).
      var slot = kind === "inline" && /^[\w-]{1,64}$/.test(m.slot) && document.querySelector('[data-cems-slot="' + m.slot + '"]');
      if (kind === "inline" && !slot) return false;
      // The host is CEMS's own element; inline !important styles and the shadow root keep the shop's CSS out.
      var host = document.createElement("cems-message");
      host.style.cssText = "all:initial!important;display:block!important";
      var root = host.attachShadow({ mode: "open" });
      el(root, "style", "", STYLE);
      var close = function () {
        host.remove();
        document.removeEventListener("keydown", esc);
        ssave(DISMISSED, sload(DISMISSED) + " " + d.id);
        report("dismissed");
      };
      var esc = function (e) { if (e.key === "Escape") close(); };
      if (kind === "modal") el(root, "div", "bd").onclick = close;
      var box = el(root, "div", "m " + kind + (m.position === "bottom" ? " bottom" : ""));
      box.setAttribute("role", kind === "modal" ? "dialog" : "region");
      box.setAttribute("aria-label", m.title || "お知らせ / Notice");
      var x = el(box, "button", "x", "×");
      x.setAttribute("aria-label", "閉じる / Close");
      x.onclick = close;
      if (http(m.image, true)) el(box, "img").src = m.image;
      if (m.title) el(box, "strong", "t", m.title);
      if (m.body) el(box, "p", "", m.body);
      (m.buttons || []).forEach(function (b, i) {
        if (!b || !http(b.url)) return; // http(s) only, checked again here
        var a = el(box, "a", "", b.label);
        a.href = b.url;
        a.onclick = function () { report("clicked", i); }; // the beacon survives the navigation
      });
      if (kind !== "inline") document.addEventListener("keydown", esc);
      (slot || document.body).appendChild(host);
      showing = true;
      // Shown means seen: reported once the message is actually in the viewport, and once a tab
      // (each page view shows it again until it is dismissed; the endpoint counts it once anyway).
      var shown = function () {
        if (sload(SHOWN).indexOf(d.id) < 0) { ssave(SHOWN, sload(SHOWN) + " " + d.id); report("shown"); }
      };
      if (!window.IntersectionObserver) return !shown();
      var seen = new IntersectionObserver(function (entries) {
        if (entries.some(function (e) { return e.isIntersecting; })) { seen.disconnect(); shown(); }
      });
      seen.observe(box);
      return true;
    };
    var fetchMessage = function () { try {
      var preview = (/[#&]cems-preview=([\w-]{32})/.exec(location.hash) || [])[1];
      // Nothing was due a moment ago: no request until that answer's cache time has passed.
      if (!preview && +sload(NONE_UNTIL) > Date.now()) return;
      fetch(endpoint + "/v1/web/messages?writeKey=" + encodeURIComponent(writeKey) + (preview ? "&preview=" + preview :
        "&anonymousId=" + encodeURIComponent(anonymousId) + "&url=" + encodeURIComponent(location.href.split("#")[0])),
        { credentials: "omit" })
        .then(function (r) {
          var age = /max-age=(\d+)/.exec(r.headers.get("Cache-Control")) || [0, 0];
          if (r.status === 204 && !preview) ssave(NONE_UNTIL, Date.now() + age[1] * 1000);
          return r.status === 200 ? r.json() : null;
        })
        // The page may listen: cems:web-message with detail.shown once the answer is handled.
        .then(function (d) { fire("cems:web-message", { shown: !!(d && d.message && show(d)) }); })
        .catch(function () {});
    } catch (e) {} }; // runs outside the tag's own try: never throw into the page
    // After load, when the browser is idle: never in the way of the shop's own page.
    var whenIdle = function () {
      if (window.requestIdleCallback) requestIdleCallback(fetchMessage, { timeout: 3000 });
      else setTimeout(fetchMessage, 1);
    };
    if (window.fetch) {
      if (document.readyState === "complete") whenIdle();
      else window.addEventListener("load", whenIdle);
    }

    // --- Start: a page view (unless the stub queued one), then the queued calls. ---
    var calls = Array.isArray(queued) ? queued.slice() : [];
    var pageQueued = calls.some(function (c) { return c && c[0] === "page"; });
    window.cems = api;
    if (!pageQueued && script.getAttribute("data-auto-page") !== "false") api.page();
    calls.forEach(function (c) {
      if (c && typeof api[c[0]] === "function") api[c[0]].apply(api, c.slice(1));
    });
    // LINE linking (docs/line.md): only for a signed-in customer (a proven user), and only once the
    // customer says yes, so a link page opened from someone else's message does nothing by itself.
    if (linkToken) {
      var linkEvent = fire;
      if (!userId || !userHash) linkEvent("cems:line-link", { status: "login_required" });
      else if (!window.confirm("LINE アカウントを、ログイン中の会員アカウントと連携しますか？\n" +
          "Link your LINE account to the shop account you are signed in with?")) {
        linkEvent("cems:line-link", { status: "declined" });
      } else {
        fetch(endpoint + "/v1/line/link?writeKey=" + encodeURIComponent(writeKey), { method: "POST",
          body: JSON.stringify({ anonymousId: anonymousId, userId: userId, userHash: userHash, linkToken: linkToken }) })
          .then(function (r) { return r.json(); })
          .then(function (d) {
            if (d && /^https?:/.test(d.redirectUrl)) location.assign(d.redirectUrl);
            else linkEvent("cems:line-link", { status: "refused", error: d && d.error });
          }).catch(function () { linkEvent("cems:line-link", { status: "failed" }); });
      }
    }
  } catch (e) {
    // Never let the tag break the shop.
  }
})(window, document);
