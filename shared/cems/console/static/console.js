// The console in the browser. Text from the server is always set as text, never as HTML.
"use strict";
(() => {
  const TOKEN = "cems_console_token";
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
  const $ = (id) => document.getElementById(id);

  async function api(path, options = {}) {
    const headers = { "content-type": "application/json" };
    const token = sessionStorage.getItem(TOKEN);
    if (token) headers.authorization = "Bearer " + token;
    const response = await fetch(path, { ...options, headers });
    let body = {};
    try { body = await response.json(); } catch (_) { /* an empty or non-JSON answer */ }
    return { status: response.status, body };
  }

  function show(signedIn) {
    $("sign-in").hidden = signedIn;
    $("home").hidden = !signedIn;
    $("who").hidden = !signedIn;
  }

  async function loadMe() {
    const { status, body } = await api("/admin/console/me");
    if (status !== 200) {
      sessionStorage.removeItem(TOKEN);
      show(false);
      if (status === 403) $("sign-in-error").textContent = body.message || "";
      return;
    }
    $("operator-name").textContent = body.name;
    $("operator-roles").textContent = body.roles.map((r) => r.label).join("・");
    const list = $("permissions");
    list.replaceChildren(...body.permissions.map((p) => {
      const item = document.createElement("li");
      item.textContent = LABELS[p] || p;
      item.dataset.permission = p;
      return item;
    }));
    show(true);
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("sign-in").addEventListener("submit", async (event) => {
      event.preventDefault();
      const form = new FormData(event.target);
      $("sign-in-error").textContent = "";
      const { status, body } = await api("/admin/console/sign-in", {
        method: "POST",
        body: JSON.stringify({ username: form.get("username"), password: form.get("password") }),
      });
      if (status !== 200) {
        $("sign-in-error").textContent = body.message || "サインインできませんでした / could not sign in";
        return;
      }
      sessionStorage.setItem(TOKEN, body.idToken);
      await loadMe();
    });
    $("sign-out").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN);
      show(false);
    });
    if (sessionStorage.getItem(TOKEN)) loadMe(); else show(false);
  });
})();
