// The report builder (seed 002): builds the query of GET /api/v1/stats from the form,
// fetches it with the session cookie and shows the rows, the totals row last.
// Plain script, no library: every value is written with textContent, never as HTML.
"use strict";

(function () {
  const form = document.getElementById("report");
  const status = document.getElementById("status");
  const errorBox = document.getElementById("error");
  const errorText = document.getElementById("error-text");
  const loginAgain = document.getElementById("login-again");
  const output = document.getElementById("output");
  const table = document.getElementById("result");
  const caption = document.getElementById("result-caption");
  let shown = null; // {columns, rows}: the table on screen, for the CSV
  // The ticked boxes in the order they were ticked: the columns' order (the browser
  // may keep boxes ticked over a reload: those come first, in the page's order).
  let ticked = Array.from(form.querySelectorAll("input[type=checkbox]:checked"));

  form.addEventListener("change", (event) => {
    const box = event.target;
    if (box.type !== "checkbox") return;
    ticked = ticked.filter((other) => other !== box);
    if (box.checked) ticked.push(box);
  });

  function checked(kinds) {
    return ticked.filter((box) => kinds.includes(box.dataset.kind))
      .map((box) => ({ name: box.value, kind: box.dataset.kind }));
  }

  function query(columns) {
    const params = new URLSearchParams();
    params.append("fields", columns.map((column) => column.name).join(","));
    const from = document.getElementById("date-from").value;
    const to = document.getElementById("date-to").value;
    if (from) params.append("date", "ge:" + from);
    if (to) params.append("date", "le:" + to);
    const posts = document.getElementById("posts").value.split(",")
      .map((post) => post.trim()).filter((post) => post);
    if (posts.length) params.append("post", "in:" + posts.join(","));
    return "/api/v1/stats?" + params.toString();
  }

  function showError(message, relogin) {
    errorText.textContent = message;
    loginAgain.hidden = !relogin;
    errorBox.hidden = false;
  }

  function display(value, kind) {
    if (value === null || value === undefined) return "";
    if (kind === "rate" && typeof value === "number") return (value * 100).toFixed(2) + " %";
    return String(value);
  }

  function row(values, columns, totals) {
    const tr = document.createElement("tr");
    columns.forEach((column, index) => {
      const header = totals && column.kind === "group";
      const cell = document.createElement(header ? "th" : "td");
      if (header) {
        cell.scope = "row";
        cell.textContent = index === 0 ? "Total" : "";
      } else {
        cell.textContent = display(values[column.name], column.kind);
      }
      if (column.kind !== "group") cell.className = "number";
      tr.appendChild(cell);
    });
    if (totals) tr.className = "totals";
    return tr;
  }

  function render(columns, result) {
    const head = document.createElement("tr");
    columns.forEach((column) => {
      const th = document.createElement("th");
      th.scope = "col";
      th.textContent = column.name;
      if (column.kind !== "group") th.className = "number";
      head.appendChild(th);
    });
    table.tHead.replaceChildren(head);
    const rows = result.slice(0, -1);
    const totals = result.length ? result[result.length - 1] : null;
    table.tBodies[0].replaceChildren(...rows.map((values) => row(values, columns, false)));
    table.tFoot.replaceChildren(...(totals ? [row(totals, columns, true)] : []));
    caption.textContent = "Report: " + rows.length + (rows.length === 1 ? " row" : " rows") + " and the totals";
    shown = { columns, rows: result };
    output.hidden = false;
  }

  async function run(event) {
    event.preventDefault();
    errorBox.hidden = true;
    // Grouping fields first (the rows are sorted by them, in this order), then the
    // aggregated ones; what is wrong or missing the server says.
    const columns = checked(["group"]).concat(checked(["count", "rate"]));
    status.textContent = "Running…";
    let response, body;
    try {
      response = await fetch(query(columns), {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      });
      body = await response.json().catch(() => null);
    } catch (failure) {
      status.textContent = "";
      showError("envoi could not be reached: " + failure.message, false);
      return;
    }
    status.textContent = "";
    if (response.status === 401) {
      showError("Your session has ended.", true);
    } else if (!response.ok) {
      showError(errorOf(response, body), false);
    } else if (body.metadata && body.metadata.ready === false) {
      showError("The report is not ready yet; run it again in a moment.", false);
    } else {
      render(columns, body.result);
      status.textContent = "Done.";
    }
  }

  function errorOf(response, body) {
    if (body && body.error) return String(body.error);
    if (body && typeof body.detail === "string") return body.detail;
    if (body && Array.isArray(body.detail)) return body.detail.map((item) => item.msg).join("; ");
    return "The report failed (HTTP " + response.status + ").";
  }

  function csvCell(value) {
    const text = value === null || value === undefined ? "" : String(value);
    return /[",\r\n]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
  }

  // The shown table, with exact values (rates as fractions, not rounded).
  function download() {
    if (!shown) return;
    const lines = [shown.columns.map((column) => csvCell(column.name)).join(",")];
    shown.rows.forEach((values, number) => {
      const totals = number === shown.rows.length - 1;
      lines.push(shown.columns.map((column, index) => {
        if (totals && column.kind === "group") return index === 0 ? "Total" : "";
        return csvCell(values[column.name]);
      }).join(","));
    });
    const blob = new Blob([lines.join("\r\n") + "\r\n"], { type: "text/csv" });
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = "report.csv";
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 1000);
  }

  form.addEventListener("submit", run);
  document.getElementById("download").addEventListener("click", download);
})();
