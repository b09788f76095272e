// The console in the browser. Text from the server is always set as text (textContent), never as
// HTML; the page's CSP allows no inline script or style, so nothing here builds either. Which tabs and
// buttons show follows the operator's permissions, but that is only for convenience: every route
// checks the permission on the server and answers 403 without data.
"use strict";
(() => {
  const TOKEN = "cems_console_token";
  const SVG_NS = "http://www.w3.org/2000/svg";
  const NOT_MEASURED = "計測なし / not measured";
  const LABELS = {
    scenarios_view: "シナリオを見る / View scenarios",
    scenarios_write: "シナリオのアップロード・停止 / Upload and stop scenarios",
    test_send: "テスト送信・プレビュー / Test-send and preview",
    reports_view: "レポートを見る / View reports",
    audience_count: "配信対象数 / Audience counts",
    customers_view: "顧客を見る（マスク） / View customers (masked)",
    customers_unmask: "マスク解除 / Unmask personal data",
    customers_export: "開示請求の出力 / Export for disclosure requests",
    customers_erase: "顧客の削除 / Erase customers",
    users_manage: "ユーザー管理 / Manage operators",
    audit_view: "操作ログ / Audit log",
  };
  const ROLES = {
    admin: "管理者 / Administrator",
    scenario_designer: "シナリオ設定者 / Scenario designer",
    content_writer: "コンテンツ設定者 / Content writer",
    analyst: "アナリスト / Analyst",
  };
  const ACTIONS = {
    sign_in: "サインイン",
    sign_in_failed: "サインイン失敗",
    sign_out: "サインアウト",
    scenario_upload: "シナリオ登録",
    scenario_delete: "シナリオ削除",
    test_send: "テスト送信",
    report_view: "レポート閲覧",
    audience_count: "配信対象数",
    customer_view: "顧客閲覧",
    customer_unmask: "マスク解除",
    customer_export: "開示用出力",
    customer_erase: "顧客削除",
    user_add: "ユーザー追加",
    user_role_change: "ロール変更",
    user_remove: "ユーザー削除",
    ip_refused: "接続元拒否",
  };
  const CHANNELS = {
    line: "LINE",
    email: "メール / Email",
    line_or_email: "LINE またはメール / LINE or email",
  };
  const OUTCOMES = { allowed: "許可 / allowed", refused: "拒否 / refused", failed: "失敗 / failed" };
  const STATES = { active: "配信中 / active", stopped: "停止 / stopped" };
  const JST = new Intl.DateTimeFormat("ja-JP", {
    timeZone: "Asia/Tokyo", year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
  });

  const $ = (id) => document.getElementById(id);
  let permissions = new Set();
  let currentCustomer = null;
  let auditCursor = null;
  // Answers to an earlier click are dropped when a later one was made meanwhile.
  let scenarioRequest = 0;
  let compareRequest = 0;
  let testSendRequest = 0;
  // A large table's count is a run in segments (202 with its `run`): the page asks for it every
  // AUDIENCE_POLL_MS, showing the counts so far, until it is complete. Counting again, or signing
  // out, stops the asking (`audienceRun` moves on).
  const AUDIENCE_POLL_MS = 2000;
  let audienceRun = 0;
  let currentScenario = null;
  // The version whose send steps the preview and test-send form lists (the active one).
  let testSendVersion = null;

  // -- talking to the API -------------------------------------------------------------------------

  async function api(path, { method = "GET", body, text = false } = {}) {
    const headers = {};
    if (body !== undefined) headers["content-type"] = "application/json";
    const token = sessionStorage.getItem(TOKEN);
    if (token) headers.authorization = "Bearer " + token;
    const response = await fetch(path, { method, headers, body, cache: "no-store" });
    const raw = await response.text();
    let json = {};
    try { json = JSON.parse(raw); } catch (_) { /* an empty or non-JSON answer (the SVG) */ }
    if (response.status === 401 && path !== "/admin/console/sign-in") {
      // The token expired or was refused by the authorizer: back to the sign-in form.
      signOut("セッションの有効期限が切れました。もう一度サインインしてください / your session ended, sign in again");
    }
    return { status: response.status, ok: response.ok, body: json, text: text ? raw : undefined };
  }

  function fail(answer) {
    const message = (answer.body && answer.body.message) || `エラー / error (HTTP ${answer.status})`;
    $("error").textContent = message;
  }

  function clearMessages() {
    $("error").textContent = "";
    $("notice").textContent = "";
  }

  // -- formatting ---------------------------------------------------------------------------------

  const isMissing = (value) => value === null || value === undefined;
  const count = (value) => (isMissing(value) ? NOT_MEASURED : Number(value).toLocaleString("ja-JP"));
  const percent = (value) => (isMissing(value) ? "—" : (value * 100).toFixed(1) + "%");
  const points = (value) =>
    isMissing(value) ? "—" : (value >= 0 ? "+" : "") + (value * 100).toFixed(1) + " pt";
  const yen = (value) =>
    isMissing(value) ? NOT_MEASURED : "¥" + Math.round(Number(value)).toLocaleString("ja-JP");
  const jst = (iso) => {
    if (!iso) return "—";
    const at = new Date(iso);
    return Number.isNaN(at.getTime()) ? String(iso) : JST.format(at);
  };
  const display = (value) => {
    if (isMissing(value) || value === "") return "—";
    if (typeof value === "object") return JSON.stringify(value);
    return String(value);
  };

  function cell(text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    return td;
  }

  function row(...cells) {
    const tr = document.createElement("tr");
    tr.append(...cells);
    return tr;
  }

  function body(tableId) {
    return $(tableId).tBodies[0];
  }

  // -- signing in and out -------------------------------------------------------------------------

  function showSignedIn(signedIn) {
    $("sign-in").hidden = signedIn;
    $("console").hidden = !signedIn;
    $("who").hidden = !signedIn;
  }

  function reset() {
    // Nothing a previous operator saw stays in the page.
    permissions = new Set();
    currentCustomer = null;
    auditCursor = null;
    scenarioRequest += 1;
    compareRequest += 1;
    testSendRequest += 1;
    currentScenario = null;
    testSendVersion = null;
    for (const table of document.querySelectorAll("#console table")) {
      for (const tbody of table.tBodies) tbody.replaceChildren();
    }
    for (const id of ["diagram", "compare-left", "compare-right", "report-notes", "permissions",
      "chart-lift", "chart-steps", "chart-channels", "chart-days", "preview", "test-send-result"]) {
      $(id).replaceChildren();
    }
    for (const id of ["compare-form", "audience-form", "test-send-form", "shown-version-form"]) {
      for (const select of $(id).querySelectorAll("select")) select.replaceChildren();
    }
    for (const id of ["operator-name", "operator-roles", "scenario-title", "report-summary",
      "report-lift", "customer-id", "customer-masked", "error", "notice", "compare-left-title",
      "compare-right-title", "upload-summary", "audience-summary", "audience-progress", "audience-note"]) {
      $(id).textContent = "";
    }
    for (const id of ["scenario-detail", "report", "customer-results", "customer-none",
      "customer-view", "scenario-empty", "audit-more", "versions", "compare", "upload-report", "shown-version-form",
      "upload-none", "upload-problems", "audience-result", "audience-problems", "report-channels",
      "report-days", "preview", "audience-progress"]) {
      $(id).hidden = true;
    }
    audienceRun += 1;  // a count still being asked after stops asking
    $("customer-search").reset();
    $("audience-form").reset();
    $("test-send-form").reset();
    applyPermissions();
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN);
    reset();
    showSignedIn(false);
    $("sign-in").reset();
    $("sign-in-error").textContent = message || "";
  }

  function applyPermissions() {
    for (const element of document.querySelectorAll("[data-needs]")) {
      element.hidden = !permissions.has(element.dataset.needs);
    }
  }

  async function loadMe() {
    const answer = await api("/admin/console/me");
    if (answer.status !== 200) {
      sessionStorage.removeItem(TOKEN);
      showSignedIn(false);
      if (answer.status === 403) $("sign-in-error").textContent = answer.body.message || "";
      return;
    }
    const me = answer.body;
    permissions = new Set(me.permissions || []);
    $("operator-name").textContent = me.name;
    $("operator-roles").textContent = (me.roles || []).map((r) => r.label).join("・");
    $("permissions").replaceChildren(...[...permissions].map((p) => {
      const item = document.createElement("li");
      item.textContent = LABELS[p] || p;
      item.dataset.permission = p;
      return item;
    }));
    applyPermissions();
    showSignedIn(true);
    await showTab(permissions.has("scenarios_view") ? "scenarios" : "home");
  }

  async function signIn(event) {
    event.preventDefault();
    const form = new FormData(event.target);
    $("sign-in-error").textContent = "";
    const answer = await api("/admin/console/sign-in", {
      method: "POST",
      body: JSON.stringify({ username: form.get("username"), password: form.get("password") }),
    });
    if (answer.status !== 200) {
      $("sign-in-error").textContent = answer.body.message || "サインインできませんでした / could not sign in";
      return;
    }
    sessionStorage.setItem(TOKEN, answer.body.idToken);
    event.target.reset();
    await loadMe();
  }

  // -- tabs ---------------------------------------------------------------------------------------

  async function showTab(name) {
    clearMessages();
    for (const tab of document.querySelectorAll("#tabs .tab")) {
      const selected = tab.dataset.tab === name;
      tab.classList.toggle("selected", selected);
      tab.setAttribute("aria-selected", String(selected));
    }
    for (const panel of document.querySelectorAll(".panel")) {
      panel.hidden = panel.id !== "panel-" + name;
    }
    if (name === "scenarios") await loadScenarios();
    if (name === "audit") await loadAudit(false);
  }

  // -- scenarios ----------------------------------------------------------------------------------

  async function loadScenarios() {
    const answer = await api("/admin/console/scenarios");
    if (!answer.ok) return fail(answer);
    const scenarios = answer.body.scenarios || [];
    $("scenario-empty").hidden = scenarios.length > 0;
    body("scenario-table").replaceChildren(...scenarios.map((s) => {
      const open = document.createElement("button");
      open.type = "button";
      open.className = "link";
      open.textContent = s.name ? `${s.name} (${s.scenario_id})` : s.scenario_id;
      open.addEventListener("click", () => openScenario(s));
      const name = document.createElement("td");
      name.append(open);
      const versions = `v${display(s.active_version)} / 最新 latest v${display(s.latest_version)}`;
      const tr = row(
        name,
        cell(STATES[s.state] || display(s.state)),
        cell(versions),
        cell(count(s.enrolled), "num"),
        cell(points(s.absolute_lift), "num"),
      );
      tr.dataset.scenario = s.scenario_id;
      return tr;
    }));
  }

  async function openScenario(scenario) {
    clearMessages();
    const request = ++scenarioRequest;
    compareRequest += 1;
    currentScenario = scenario.scenario_id;
    $("scenario-detail").hidden = false;
    $("scenario-title").textContent = scenario.name
      ? `${scenario.name} (${scenario.scenario_id})` : scenario.scenario_id;
    for (const id of ["diagram", "compare-left", "compare-right", "preview", "test-send-result"]) {
      $(id).replaceChildren();
    }
    for (const id of ["report", "versions", "compare", "upload-report", "preview", "shown-version-form"]) {
      $(id).hidden = true;
    }
    testSendRequest += 1;
    testSendVersion = null;
    $("test-send-form").elements.step.replaceChildren();
    const id = encodeURIComponent(scenario.scenario_id);
    // The diagram, versions and upload report at once; each answer is dropped if another
    // scenario was opened meanwhile.
    // The drawing alone first: its counts come with the report, so one look is one audit entry.
    const [diagram, versions, upload] = await Promise.all([
      fetchDiagram(scenario.scenario_id),
      api(`/admin/console/scenarios/${id}/versions`),
      api(`/admin/console/scenarios/${id}/upload-report`),
    ]);
    if (request !== scenarioRequest) return;
    const svg = diagramSvg(diagram);
    if (svg) $("diagram").replaceChildren(svg);
    if (versions.ok) {
      renderVersions(versions.body);
      renderSendSteps(versions.body);
    } else fail(versions);
    renderUploadReport(upload);
    if (!permissions.has("reports_view")) return;
    if (versions.ok) renderShownVersions(versions.body);
    await loadReport(request, "");
  }

  // The report of the version chosen ("" = every version added together), and the diagram drawn
  // with that report's counts per step: one request, so one audit entry per look.
  async function loadReport(request, version) {
    const id = encodeURIComponent(currentScenario);
    const query = version ? `?version=${encodeURIComponent(version)}` : "";
    const report = await api(`/admin/console/scenarios/${id}/report${query}`);
    if (request !== scenarioRequest) return;
    if (!report.ok) return fail(report);
    if (report.body.diagram) {
      const counted = diagramSvg({ ok: true, text: report.body.diagram });
      if (counted) $("diagram").replaceChildren(counted);
    }
    renderReport(report.body);
  }

  function renderShownVersions(info) {
    const select = $("shown-version-form").elements.version;
    const all = document.createElement("option");
    all.value = "";
    all.textContent = "全バージョン / all versions";
    select.replaceChildren(all, ...(info.versions || []).map((v) => {
      const option = document.createElement("option");
      option.value = String(v.version);
      option.textContent = `v${v.version}` + (v.version === info.active_version ? "（有効 / active）" : "");
      return option;
    }));
    select.value = "";
    $("shown-version-form").hidden = false;
  }

  async function showVersion() {
    if (!currentScenario) return;
    clearMessages();
    await loadReport(scenarioRequest, $("shown-version-form").elements.version.value);
  }

  // The active version's diagram, as SVG text, without counts (the report brings them).
  function fetchDiagram(scenarioId) {
    return api(`/admin/console/scenarios/${encodeURIComponent(scenarioId)}/diagram?counts=false`, { text: true });
  }

  // The answer's SVG checked and imported (safeSvg), or null with the error shown.
  function diagramSvg(answer) {
    if (!answer.ok) {
      fail(answer);
      return null;
    }
    const svg = safeSvg(answer.text);
    if (!svg) $("error").textContent = "図を表示できません / the diagram could not be shown safely";
    return svg;
  }

  // Several diagrams in one page would share their marker ids (cems-arrow-*): a copy shown beside
  // another gets its own, and its url(#...) and #... references follow.
  function scopeIds(svg, prefix) {
    const elements = [svg, ...svg.querySelectorAll("*")];
    for (const element of elements) {
      if (element.id) element.id = prefix + element.id;
    }
    for (const element of elements) {
      for (const attribute of [...element.attributes]) {
        const value = attribute.value;
        if (value.includes("url(#")) attribute.value = value.replaceAll("url(#", "url(#" + prefix);
        else if (attribute.name.toLowerCase().endsWith("href") && value.trim().startsWith("#")) {
          attribute.value = "#" + prefix + value.trim().slice(1);
        }
      }
    }
    return svg;
  }

  function versionState(info, version) {
    if (version !== info.active_version) return "—";
    return STATES[info.state] || display(info.state);
  }

  function renderVersions(info) {
    const versions = info.versions || [];
    $("versions").hidden = false;
    body("version-table").replaceChildren(...versions.map((v) => {
      const tr = row(
        cell(`v${display(v.version)}`),
        cell(jst(v.uploaded_at)),
        cell(display(v.name)),
        cell(display(v.priority), "num"),
        cell(versionState(info, v.version)),
      );
      tr.dataset.version = String(v.version);
      if (v.version === info.active_version) tr.classList.add("active-version");
      return tr;
    }));
    const options = () => versions.map((v) => {
      const option = document.createElement("option");
      option.value = String(v.version);
      option.textContent = `v${v.version}` + (v.version === info.active_version ? "（有効 / active）" : "");
      return option;
    });
    const form = $("compare-form");
    form.elements.left.replaceChildren(...options());
    form.elements.right.replaceChildren(...options());
    // The two newest by default (the same one twice when there is only one).
    if (versions.length) {
      form.elements.right.value = String(versions[versions.length - 1].version);
      form.elements.left.value = String(versions[Math.max(versions.length - 2, 0)].version);
    }
  }

  async function compareVersions(event) {
    event.preventDefault();
    clearMessages();
    if (!currentScenario) return;
    const request = ++compareRequest;
    const form = $("compare-form");
    const sides = [["left", form.elements.left.value], ["right", form.elements.right.value]];
    // Both sides in one request: one look, one audit entry.
    const query = sides.map(([side, version]) => `${side}=${encodeURIComponent(version)}`).join("&");
    const answer = await api(`/admin/console/scenarios/${encodeURIComponent(currentScenario)}/compare?${query}`);
    if (request !== compareRequest) return;
    if (!answer.ok) return fail(answer);
    $("compare").hidden = false;
    sides.forEach(([side, version]) => {
      $(`compare-${side}-title`).textContent = `v${version}`;
      const svg = diagramSvg({ ok: true, text: answer.body[side] });
      if (svg) svg.dataset.version = version;
      $(`compare-${side}`).replaceChildren(...(svg ? [scopeIds(svg, `${side}-`)] : []));
    });
  }

  // -- preview and test send of a send step ----------------------------------------------------------
  // The rendered content is the server's (the engine's own rendering) and is shown as text only: a
  // mail's HTML part as its source, never as markup.

  // The active version's send steps (the newest version's when none is active) in the step list.
  function renderSendSteps(info) {
    const versions = info.versions || [];
    const chosen = versions.find((v) => v.version === info.active_version) || versions[versions.length - 1];
    testSendVersion = chosen ? chosen.version : null;
    const steps = (chosen && chosen.send_steps) || [];
    $("test-send-form").elements.step.replaceChildren(...steps.map((step) => {
      const option = document.createElement("option");
      option.value = String(step.id);
      const name = step.name ? `${step.name} (${step.id})` : String(step.id);
      option.textContent = `${name}・${CHANNELS[step.channel] || display(step.channel)}`;
      return option;
    }));
    for (const id of ["preview-button", "test-send-button"]) $(id).disabled = steps.length === 0;
  }

  function stepRequest() {
    const request = { step: String($("test-send-form").elements.step.value || "") };
    if (testSendVersion !== null) request.version = testSendVersion;
    return request;
  }

  // The API's message, and the form field it names marked for the operator to fix.
  function failField(answer) {
    fail(answer);
    const field = answer.body && answer.body.field;
    const input = field ? $("test-send-form").elements.namedItem(field) : null;
    if (input && input.setAttribute) {
      input.setAttribute("aria-invalid", "true");
      input.focus();
    }
  }

  function clearTestSend() {
    clearMessages();
    $("test-send-result").replaceChildren();
    for (const input of $("test-send-form").elements) input.removeAttribute("aria-invalid");
  }

  // A labelled block of text: the label, then the text as it is (line breaks kept).
  function textBlock(label, text, part) {
    const block = document.createElement("div");
    block.className = "preview-part";
    if (part) block.dataset.part = part;
    const title = document.createElement("p");
    title.className = "preview-label";
    title.textContent = label;
    const pre = document.createElement("pre");
    pre.textContent = isMissing(text) || text === "" ? "（なし / none）" : String(text);
    block.append(title, pre);
    return block;
  }

  function lineParts(content) {
    const messages = content.messages || [];
    const parts = messages.map((message, index) => {
      const kind = display(message.type);
      const label = `メッセージ ${index + 1} / Message ${index + 1}（${kind}）`;
      // A text message shows its text; any other kind (image, flex, template) its JSON.
      const text = typeof message.text === "string" ? message.text : JSON.stringify(message, null, 2);
      return textBlock(label, text, "line-message");
    });
    if (content.notification_disabled) parts.push(detail("通知なしで届きます / delivered without a notification"));
    return parts;
  }

  function emailParts(content) {
    return [
      textBlock("件名 / Subject", content.subject, "subject"),
      textBlock("テキスト / Text part", content.text, "text"),
      textBlock("HTML（ソース / source）", content.html, "html"),
      detail("送信時に法定表示のフッターと配信停止リンクが付きます / the legal footer and the unsubscribe link are added when it is sent"),
    ];
  }

  function renderPreview(preview) {
    const step = preview.step || {};
    const who = preview.profile === "sample" ? "サンプルのプロフィール / a sample profile" : "指定のプロフィール / the given profile";
    const heading = detail(`v${display(preview.version)}・${display(step.name || step.id)} (${display(step.id)})・${who}`);
    const cards = (preview.channels || []).map((rendered) => {
      const card = document.createElement("section");
      card.className = "preview-card";
      card.dataset.channel = String(rendered.channel);
      const title = document.createElement("h5");
      title.textContent = CHANNELS[rendered.channel] || display(rendered.channel);
      card.append(title);
      const content = rendered.content || {};
      if (rendered.channel === "line") card.append(...lineParts(content));
      else if (rendered.channel === "email") card.append(...emailParts(content));
      else card.append(textBlock("内容 / Content", JSON.stringify(content, null, 2)));
      return card;
    });
    $("preview").replaceChildren(heading, ...cards);
    $("preview").hidden = false;
  }

  async function previewStep(event) {
    event.preventDefault();
    clearTestSend();
    if (!currentScenario) return;
    const request = ++testSendRequest;
    const path = `/admin/console/scenarios/${encodeURIComponent(currentScenario)}/preview`;
    const answer = await api(path, { method: "POST", body: JSON.stringify(stepRequest()) });
    if (request !== testSendRequest) return;
    if (!answer.ok) {
      $("preview").hidden = true;
      return failField(answer);
    }
    renderPreview(answer.body);
  }

  async function testSend() {
    clearTestSend();
    if (!currentScenario) return;
    const form = $("test-send-form");
    const to = String(form.elements.to.value || "").trim();
    if (!to) {
      $("error").textContent = "宛先を入力してください / give a recipient: line:U… or email:…";
      form.elements.to.setAttribute("aria-invalid", "true");
      form.elements.to.focus();
      return;
    }
    const request = ++testSendRequest;
    const button = $("test-send-button");
    button.disabled = true;
    try {
      const path = `/admin/console/scenarios/${encodeURIComponent(currentScenario)}/test-send`;
      const answer = await api(path, { method: "POST", body: JSON.stringify({ ...stepRequest(), to }) });
      if (request !== testSendRequest) return;
      if (!answer.ok) return failField(answer);
      const sent = answer.body;
      // The answer never repeats the recipient; neither does the page.
      $("test-send-result").replaceChildren(...[
        `テスト送信を ${display(sent.queue)} に登録しました / test send queued on ${display(sent.queue)}`,
        `ステップ / Step ${display(sent.step)}・${CHANNELS[sent.channel] || display(sent.channel)}・キー / Key ${display(sent.key)}`,
        `内容 / Content: ${display(sent.preview)}`,
        display(sent.note),
      ].map((text) => {
        const line = document.createElement("span");
        line.className = "line";
        line.textContent = text;
        return line;
      }));
      // A web test shows on the shop's page through its preview link (http(s) only, as text too).
      if (typeof sent.link === "string" && /^https?:\/\//.test(sent.link)) {
        const link = document.createElement("a");
        link.className = "line";
        link.href = sent.link;
        link.target = "_blank";
        link.rel = "noopener noreferrer";
        link.textContent = `ページで見る / Open on the page: ${sent.link}`;
        $("test-send-result").append(link);
      }
    } finally {
      button.disabled = false;
    }
  }

  // The loader's report on the last upload: its summary and every error (and warning) at its path.
  function renderUploadReport(answer) {
    $("upload-report").hidden = false;
    const missing = answer.status === 404 && answer.body.error === "upload_report_not_found";
    if (!answer.ok && !missing) {
      $("upload-report").hidden = true;
      return fail(answer);
    }
    $("upload-none").hidden = !missing;
    const report = missing ? {} : answer.body;
    const validity = report.valid ? "有効 / valid" : "無効 / invalid";
    $("upload-summary").textContent = missing ? ""
      : `${validity}・${display(report.summary_ja)}・確認 checked ${jst(report.checked_at)}`;
    const problems = [
      ...(report.errors || []).map((p) => ["error", p]),
      ...(report.warnings || []).map((p) => ["warning", p]),
    ];
    $("upload-problems").hidden = problems.length === 0;
    body("upload-problems").replaceChildren(...problems.map(([kind, p]) => {
      const tr = row(
        cell(kind === "error" ? "エラー / error" : "警告 / warning", "problem-" + kind),
        cell(display(p.path)),
        cell(display(p.step)),
        cell(display(p.message)),
      );
      tr.dataset.kind = kind;
      return tr;
    }));
  }

  // -- the audience of a scenario document ---------------------------------------------------------

  async function readAudienceFile(event) {
    const file = event.target.files && event.target.files[0];
    if (!file) return;
    $("audience-form").elements.namedItem("document").value = await file.text();
  }

  async function countAudience(event) {
    event.preventDefault();
    clearMessages();
    const mine = ++audienceRun;
    $("audience-result").hidden = true;
    $("audience-problems").hidden = true;
    $("audience-progress").hidden = true;
    const document_ = String($("audience-form").elements.namedItem("document").value || "");
    let answer = await api("/admin/console/audience", { method: "POST", body: document_ });
    if (!answer.ok) {
      const problems = (answer.body && answer.body.problems) || [];
      $("audience-problems").hidden = problems.length === 0;
      body("audience-problems").replaceChildren(...problems.map((p) => row(
        cell(display(p.path)),
        cell(p.step ? `${display(p.message)}（step ${p.step}）` : display(p.message)),
      )));
      return fail(answer);
    }
    renderAudience(answer.body);
    // Until complete, or stalled (a segment that will never be counted: its note says count again).
    while (answer.body.run && !answer.body.complete && !answer.body.stalled) {
      await new Promise((resolve) => setTimeout(resolve, AUDIENCE_POLL_MS));
      if (mine !== audienceRun) return;
      answer = await api(`/admin/console/audience/${encodeURIComponent(answer.body.run)}`);
      if (mine !== audienceRun) return;
      if (!answer.ok) return fail(answer);
      renderAudience(answer.body);
    }
  }

  function renderAudience(result) {
    $("audience-result").hidden = false;
    const progress = $("audience-progress");
    progress.hidden = !result.run;
    if (result.run) {
      const done = `${count(result.segments_done)}/${count(result.segments)}`;
      const seconds = Math.round((result.elapsed_ms || 0) / 1000);
      progress.textContent = result.complete
        ? `集計完了 ${done} セグメント（${seconds} 秒） / count complete: ${done} segments (${seconds} s)`
        : `集計中… ${done} セグメント完了（${seconds} 秒経過） / counting: ${done} segments done (${seconds} s)`;
    }
    const complete = result.complete ? "" : (result.run ? "・集計中 / counting" : "・途中まで / partial");
    $("audience-summary").textContent = `${display(result.scenario_id)}（${display(result.trigger_type)}）・`
      + `集計 counted ${jst(result.counted_at)}${complete}`;
    const counts = [
      ["対象 / Matching", result.matching],
      ["ホールドアウト / Holdout", result.holdout],
      ["ホールドアウト外 / Outside holdout", result.outside_holdout],
      ["送信可能 / Sendable", result.sendable],
    ];
    for (const [reason, number] of Object.entries(result.excluded || {})) {
      counts.push([`対象外 / Excluded: ${reason}`, number]);
    }
    body("audience-counts").replaceChildren(...counts.map(([label, value]) => {
      const th = document.createElement("th");
      th.textContent = label;
      const tr = document.createElement("tr");
      tr.append(th, cell(count(value), "num"));
      return tr;
    }));
    const matching = body("audience-counts").rows[0];
    matching.id = "audience-matching";
    body("audience-channels").replaceChildren(...(result.channels || []).map((c) => row(
      cell(c.title ? `${c.title} (${c.channel})` : display(c.channel)),
      cell(count(c.reachable), "num"),
      cell(count(c.reachable_outside_holdout), "num"),
    )));
    body("audience-sample").replaceChildren(...(result.sample || []).map((s) => row(
      cell(display(s.profile && s.profile.customer_id)),
      cell(trait(s.profile, "name", "last_name", "first_name")),
      cell(trait(s.profile, "email")),
      cell(s.holdout ? "ホールドアウト / holdout" : "施策群 / treatment"),
      cell((s.reachable || []).join(", ") || "—"),
    )));
    $("audience-note").textContent = result.note || "";
  }

  // The diagram comes as SVG text, fetched with the token (an <img> or <object> pointing at the route
  // could not send the Authorization header, and a blob: URL is outside the CSP's img-src). It is put
  // into the page as live SVG, so it is parsed as XML and refused unless it is plain drawing: the
  // server escapes every text it draws, and this check keeps a script out should that ever fail.
  const UNSAFE_ELEMENTS = new Set([
    "script", "foreignobject", "iframe", "embed", "object", "image", "handler", "listener",
    "animate", "set", "animatemotion", "animatetransform", "discard",
  ]);

  function safeSvg(text) {
    const parsed = new DOMParser().parseFromString(text || "", "image/svg+xml");
    const root = parsed.documentElement;
    if (!root || root.namespaceURI !== SVG_NS || root.localName !== "svg") return null;
    if (parsed.getElementsByTagNameNS("*", "parsererror").length > 0) return null;
    for (const element of [root, ...root.querySelectorAll("*")]) {
      if (element.namespaceURI !== SVG_NS || UNSAFE_ELEMENTS.has(element.localName.toLowerCase())) {
        return null;
      }
      for (const attribute of element.attributes) {
        const name = attribute.name.toLowerCase();
        if (name.startsWith("on")) return null;
        // Only references within the drawing (its arrow markers): no javascript: or outside URLs.
        if ((name === "href" || name.endsWith(":href")) && !attribute.value.trim().startsWith("#")) {
          return null;
        }
      }
    }
    return document.importNode(root, true);
  }

  function groupRow(label, group) {
    return row(
      cell(label),
      cell(count(group && group.enrolled), "num"),
      cell(count(group && group.converted), "num"),
      cell(percent(group && group.conversion_rate), "num"),
      cell(yen(group && group.revenue), "num"),
    );
  }

  function liftText(lift) {
    if (!lift || isMissing(lift.absolute)) return "算出できません / cannot be computed";
    let text = `${points(lift.absolute)}`;
    if (lift.absolute_ci) text += ` (${Math.round((lift.confidence || 0.95) * 100)}% CI ${points(lift.absolute_ci.low)} 〜 ${points(lift.absolute_ci.high)})`;
    if (!isMissing(lift.relative)) text += `、相対 relative ${(lift.relative >= 0 ? "+" : "") + (lift.relative * 100).toFixed(1)}%`;
    if (!isMissing(lift.p_value)) text += `、p = ${Number(lift.p_value).toFixed(3)}`;
    return text;
  }

  function renderReport(report) {
    $("report").hidden = false;
    const version = isMissing(report.version) ? "全バージョン / all versions" : `v${report.version}`;
    $("report-summary").textContent =
      `${version}・目標 goal: ${display(report.goal)}・登録 enrolled ${count(report.enrolled)}` +
      `（ホールドアウト holdout ${count(report.held_out)}）・集計 generated ${jst(report.generated_at)}`;

    const groups = [
      groupRow("施策群 / Treatment", report.treatment),
      groupRow("ホールドアウト / Holdout", report.holdout),
    ];
    for (const variant of report.variants || []) {
      groups.push(groupRow(`バリアント / Variant ${variant.variant}`, variant.treatment));
    }
    body("report-groups").replaceChildren(...groups);

    const lifts = [`リフト / Lift（施策群 − ホールドアウト / treatment − holdout）: ${liftText(report.lift)}`];
    for (const variant of report.variants || []) {
      lifts.push(`バリアント / Variant ${variant.variant}: ${liftText(variant.lift)}`);
    }
    $("report-lift").replaceChildren(...lifts.map((text) => {
      const line = document.createElement("span");
      line.textContent = text;
      line.className = "line";
      return line;
    }));

    const steps = report.steps || [];
    if (steps.length === 0) {
      const none = cell("ステップごとの計測はまだありません / nothing counted per step yet", "muted");
      none.colSpan = 8;
      body("report-steps").replaceChildren(row(none));
    } else body("report-steps").replaceChildren(...steps.map((step) => {
      // A null is a figure the channel does not report (LINE has no per-recipient opens), never 0;
      // the report says why in `not_measured`, shown when hovering the cell.
      const why = step.not_measured || {};
      const measured = (name) => {
        const td = cell(count(step[name]), "num");
        if (isMissing(step[name]) && why[name]) td.title = String(why[name]);
        return td;
      };
      return row(
        cell(step.name ? `${step.name} (${step.step_id})` : display(step.step_id)),
        cell(step.channel ? `${display(step.type)} · ${step.channel}` : display(step.type)),
        cell(display(step.variant)),
        ...["sent", "delivered", "opened", "clicked", "converted"].map(measured),
      );
    }));

    renderCharts(report);

    const notes = [...(report.notes || []), ...((report.lift && report.lift.notes) || [])];
    $("report-notes").replaceChildren(...notes.map((note) => {
      const item = document.createElement("li");
      item.textContent = note;
      return item;
    }));
  }

  // -- the report's charts -------------------------------------------------------------------------
  // The charts are the server's SVG, the same drawings as the HTML report's (cems.reports.charts), so
  // no chart is drawn twice; each is checked like the diagram (safeSvg) before it goes in. Their
  // captions and the lines under them are written here from the report's figures, as text.

  function detail(text, className) {
    const line = document.createElement("p");
    line.className = className ? `detail ${className}` : "detail";
    line.textContent = text;
    return line;
  }

  // Why a figure is null ("not measured"): the channel's own words, shown under its chart.
  const reasons = (row) =>
    Object.values((row && row.not_measured) || {}).map((why) => detail(String(why), "why"));

  function chartCard(kind, caption, svgText, details = []) {
    const figure = document.createElement("figure");
    figure.className = "chart-card";
    figure.dataset.chart = kind;
    const title = document.createElement("figcaption");
    title.textContent = caption;
    figure.append(title);
    const svg = safeSvg(svgText);
    // One chart that fails the check is left out in words; the others still show.
    figure.append(svg || detail("グラフを表示できません / the chart could not be shown safely", "error"));
    figure.append(...details);
    return figure;
  }

  function renderCharts(report) {
    const charts = report.charts || {};
    const labels = new Map((charts.channels || []).map((c) => [c.channel, c.label]));
    const channelLabel = (channel) =>
      isMissing(channel) ? "チャネルなし / no channel" : labels.get(channel) || String(channel);

    const lifts = [];
    if (charts.lift) {
      const caption = "施策群とホールドアウトの比較 / Treatment vs holdout（リフトと信頼区間 / lift and its interval）";
      lifts.push(chartCard("lift", caption, charts.lift));
    }
    const variants = new Map((report.variants || []).map((v) => [v.variant, v]));
    for (const chart of charts.variants || []) {
      const variant = variants.get(chart.variant);
      const against = variant && variant.compared_with === "variant_holdout"
        ? "同じバリアントのホールドアウト / its own holdout" : "ホールドアウト全体 / the whole holdout";
      const caption = `バリアント / Variant ${chart.variant}（比較対象 / against: ${against}）`;
      lifts.push(chartCard("variant", caption, chart.svg));
    }
    $("chart-lift").replaceChildren(...lifts);

    // charts.steps[i] draws report.steps[i].
    const steps = report.steps || [];
    $("chart-steps").replaceChildren(...(charts.steps || []).map((chart, index) => {
      const step = steps[index] || chart;
      let caption = step.name ? `${step.name} (${step.step_id})` : display(step.step_id);
      if (!isMissing(step.variant)) caption += `・バリアント / Variant ${step.variant}`;
      caption += `・${channelLabel(step.channel)}`;
      const counts = `失敗 failed ${count(step.failed)}・抑止 suppressed ${count(step.suppressed)}・`
        + `上限 capped ${count(step.capped)}・延期 deferred ${count(step.deferred)}・`
        + `保留 held out ${count(step.held_out)}`;
      // A `best` step's sends on this channel by why it was chosen (the customer's engagement, or
      // the default order): shown only where the step chose.
      const chosen = step.chosen_by_engagement || step.chosen_by_default
        ? [detail(`最適チャネル best: 反応で選択 by engagement ${count(step.chosen_by_engagement)}・`
          + `既定の順 by default order ${count(step.chosen_by_default)}`)]
        : [];
      const card = chartCard("step", caption, chart.svg, [detail(counts), ...chosen, ...reasons(step)]);
      card.dataset.step = String(chart.step_id);
      return card;
    }));

    const channelRows = new Map((report.channels || []).map((c) => [c.channel, c]));
    const perChannel = (charts.channels || []).map((chart) => {
      const channel = channelRows.get(chart.channel) || {};
      const details = [];
      if (channel.imp) details.push(detail(`IMP（送信 / sent）= ${channel.imp}`));
      details.push(...reasons(channel), detail(`売上 / revenue ${yen(channel.revenue)}`));
      const card = chartCard("channel", chart.label, chart.svg, details);
      card.dataset.channel = String(chart.channel);
      return card;
    });
    if (charts.conversions) {
      const why = "購入前に最後に送ったメッセージのチャネル / the channel of the last message sent before converting";
      perChannel.push(chartCard("conversions", "コンバージョンの帰属 / Conversions by channel",
        charts.conversions, [detail(why)]));
    }
    $("chart-channels").replaceChildren(...perChannel);
    $("report-channels").hidden = perChannel.length === 0;

    const days = report.days || [];
    $("report-days").hidden = days.length === 0;
    const scale = detail("系列ごとに目盛りが異なります / each series has its own scale");
    $("chart-days").replaceChildren(...(charts.days ? [chartCard("days", "日別 (JST) / Per day", charts.days, [scale])] : []));
    body("report-day-table").replaceChildren(...days.map((day) => {
      const delivered = cell(count(day.delivered), "num");
      if (isMissing(day.delivered) && day.not_measured && day.not_measured.delivered) {
        delivered.title = String(day.not_measured.delivered);
      }
      return row(
        cell(isMissing(day.day) ? "日付なし / before per-day counts (issue 12 以前)" : String(day.day)),
        cell(count(day.enrolled), "num"),
        cell(count(day.sent), "num"),
        delivered,
        cell(count(day.clicked), "num"),
        cell(count(day.converted), "num"),
        cell(count(day.holdout_converted), "num"),
      );
    }));
  }

  // -- customers ----------------------------------------------------------------------------------

  function trait(profile, ...names) {
    const traits = (profile && profile.traits) || {};
    const values = names.map((n) => traits[n]).filter((v) => !isMissing(v) && v !== "");
    return values.length ? values.map(display).join(" ") : "—";
  }

  async function searchCustomers(event) {
    event.preventDefault();
    clearMessages();
    const form = new FormData(event.target);
    const kind = String(form.get("kind"));
    const value = String(form.get("value") || "").trim();
    $("customer-view").hidden = true;
    const answer = await api(`/admin/console/customers?${encodeURIComponent(kind)}=${encodeURIComponent(value)}`);
    if (!answer.ok) {
      $("customer-results").hidden = true;
      return fail(answer);
    }
    const customers = answer.body.customers || [];
    $("customer-results").hidden = customers.length === 0;
    $("customer-none").hidden = customers.length > 0;
    body("customer-results").replaceChildren(...customers.map((c) => {
      const open = document.createElement("button");
      open.type = "button";
      open.textContent = "表示 / View";
      open.addEventListener("click", () => openCustomer(c.customer_id, false));
      const action = document.createElement("td");
      action.append(open);
      const tr = row(
        cell(c.customer_id),
        cell(trait(c.profile, "name", "last_name", "first_name")),
        cell(trait(c.profile, "email")),
        cell(trait(c.profile, "phone")),
        action,
      );
      tr.dataset.customer = c.customer_id;
      return tr;
    }));
  }

  function profileRows(profile) {
    const rows = [
      ["顧客ID / Customer id", profile.customer_id],
      ["会員ID / Shop user id", profile.user_id],
      ["LINE ユーザーID / LINE user id", profile.line_user_id],
    ];
    for (const [name, value] of Object.entries(profile.traits || {})) rows.push([name, value]);
    rows.push(
      ["購入回数 / Purchases", profile.purchase_count],
      ["購入金額 / Spent", isMissing(profile.monetary_total) ? null : yen(profile.monetary_total)],
      ["最終購入 / Last purchase", profile.last_purchase_at ? jst(profile.last_purchase_at) : null],
    );
    for (const [channel, state] of Object.entries(profile.channels || {})) {
      const consent = state.consent ? "同意あり / consented" : "同意なし / no consent";
      const reachable = state.reachable ? "到達可 / reachable" : "到達不可 / unreachable";
      rows.push([`チャネル / Channel ${channel}`, `${consent}・${reachable}`]);
    }
    rows.push(
      ["匿名ID / Anonymous ids", (profile.anonymous_ids || []).join(", ")],
      ["初回 / First seen", jst(profile.first_seen_at)],
      ["更新 / Updated", jst(profile.updated_at)],
    );
    return rows.map(([label, value]) => {
      const th = document.createElement("th");
      th.textContent = label;
      const tr = document.createElement("tr");
      tr.append(th, cell(display(value)));
      return tr;
    });
  }

  async function openCustomer(customerId, unmasked) {
    clearMessages();
    const path = `/admin/console/customers/${encodeURIComponent(customerId)}` + (unmasked ? "?unmasked=true" : "");
    const answer = await api(path);
    if (!answer.ok) return fail(answer);
    const view = answer.body;
    currentCustomer = view.customer_id;
    $("customer-view").hidden = false;
    $("customer-id").textContent = view.customer_id;
    $("customer-masked").textContent = view.masked ? "マスク表示 / masked" : "マスク解除中 / unmasked";
    $("customer-masked").classList.toggle("unmasked", !view.masked);
    body("customer-profile").replaceChildren(...profileRows(view.profile || {}));
    const timeline = view.timeline || {};
    body("customer-events").replaceChildren(...(timeline.events || []).map((e) => row(
      cell(jst(e.at || e.timestamp)),
      cell(display(e.type)),
      cell(display(e.event || e.name)),
      cell(display(e.site_id)),
    )));
    body("customer-journeys").replaceChildren(...(timeline.enrolments || []).map((j) => row(
      cell(`${display(j.scenario_id)} v${display(j.version)}`),
      cell(display(j.state)),
      cell(display(j.step_id)),
      cell(jst(j.entered_at)),
      cell(count(j.sends), "num"),
    )));
    body("customer-messages").replaceChildren(...(timeline.messages || []).map((m) => row(
      cell(jst(m.at)),
      cell(`${display(m.scenario_id)} v${display(m.version)}`),
      cell(display(m.step_id)),
      cell(display(m.channel)),
    )));
  }

  async function exportCustomer() {
    clearMessages();
    if (!currentCustomer) return;
    const answer = await api(`/admin/console/customers/${encodeURIComponent(currentCustomer)}/export`);
    if (!answer.ok) return fail(answer);
    const blob = new Blob([JSON.stringify(answer.body, null, 2)], { type: "application/json" });
    const url = URL.createObjectURL(blob);
    const link = document.createElement("a");
    link.href = url;
    link.download = `customer-${currentCustomer}.json`;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    $("notice").textContent = "出力しました / exported";
  }

  async function eraseCustomer() {
    clearMessages();
    if (!currentCustomer) return;
    const question = `顧客 ${currentCustomer} のデータをすべて削除します。元に戻せません。\n`
      + `Erase everything held about customer ${currentCustomer}? This cannot be undone.`;
    if (!window.confirm(question)) return;
    const erased = currentCustomer;
    const answer = await api(`/admin/console/customers/${encodeURIComponent(erased)}`, { method: "DELETE" });
    if (!answer.ok) return fail(answer);
    currentCustomer = null;
    $("customer-view").hidden = true;
    for (const tr of body("customer-results").querySelectorAll("tr")) {
      if (tr.dataset.customer === erased) tr.remove();
    }
    $("notice").textContent = `削除しました / erased: ${(answer.body.customer_ids || [erased]).join(", ")}`;
  }

  // -- the audit log ------------------------------------------------------------------------------

  async function loadAudit(more) {
    const query = more && auditCursor ? `?cursor=${encodeURIComponent(auditCursor)}` : "";
    const answer = await api("/admin/console/audit" + query);
    if (!answer.ok) return fail(answer);
    const rows = (answer.body.entries || []).map((e) => {
      const target = cell(display(e.target));
      if (e.detail && Object.keys(e.detail).length) target.title = JSON.stringify(e.detail);
      const tr = row(
        cell(jst(e.at)),
        cell(display(e.actor)),
        cell(ROLES[e.role] || display(e.role)),
        cell(ACTIONS[e.action] ? `${ACTIONS[e.action]} (${e.action})` : display(e.action)),
        target,
        cell(display(e.source_ip)),
        cell(OUTCOMES[e.outcome] || display(e.outcome), "outcome-" + e.outcome),
      );
      tr.dataset.action = e.action;
      return tr;
    });
    if (more) body("audit-table").append(...rows);
    else body("audit-table").replaceChildren(...rows);
    auditCursor = answer.body.cursor || null;
    $("audit-more").hidden = !auditCursor;
  }

  // -- wiring -------------------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    $("sign-in").addEventListener("submit", signIn);
    $("sign-out").addEventListener("click", () => signOut(""));
    for (const tab of document.querySelectorAll("#tabs .tab")) {
      tab.addEventListener("click", () => showTab(tab.dataset.tab));
    }
    $("customer-search").addEventListener("submit", searchCustomers);
    $("compare-form").addEventListener("submit", compareVersions);
    $("shown-version-form").elements.version.addEventListener("change", showVersion);
    $("shown-version-form").addEventListener("submit", (event) => event.preventDefault());
    $("audience-form").addEventListener("submit", countAudience);
    $("test-send-form").addEventListener("submit", previewStep);
    $("test-send-button").addEventListener("click", testSend);
    $("audience-form").elements.file.addEventListener("change", readAudienceFile);
    $("unmask").addEventListener("click", () => currentCustomer && openCustomer(currentCustomer, true));
    $("export").addEventListener("click", exportCustomer);
    $("erase").addEventListener("click", eraseCustomer);
    $("audit-more").addEventListener("click", () => loadAudit(true));
    if (sessionStorage.getItem(TOKEN)) loadMe(); else showSignedIn(false);
  });
})();
