// The imageInference pack in ComfyUI's frontend:
// - "Extensions > imageInference > Show request": the graph as an imageInference request (through the pack's
//   exporter), with what is not exportable listed; copy it or download it.
// - A request JSON dropped on the page (not a workflow) is compiled into a graph and opened.
// - "Pull model <AIR>" in the context menu of the pack's nodes fetches a missing model into ComfyUI's folders.
import { app } from "../../scripts/app.js";

const EXPORT_URL = "/imageinference/graph/export";
const COMPILE_URL = "/imageinference/graph/compile";
const DIALOG_ID = "imageinference-request-dialog";

async function postJSON(url, body) {
  const response = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  return { ok: response.ok, body: await response.json() };
}

function errorText(body) {
  return (body.errors || []).map((e) => `${e.code}: ${e.message}`).join("\n") || JSON.stringify(body);
}

function button(label, onClick) {
  const b = document.createElement("button");
  b.textContent = label;
  b.style.cssText = "margin-right:8px;padding:4px 12px;cursor:pointer";
  b.addEventListener("click", onClick);
  return b;
}

function showRequestDialog(result) {
  document.getElementById(DIALOG_ID)?.remove();
  const overlay = document.createElement("div");
  overlay.id = DIALOG_ID;
  overlay.style.cssText =
    "position:fixed;inset:0;z-index:10000;background:rgba(0,0,0,.6);display:flex;align-items:center;justify-content:center";
  const box = document.createElement("div");
  box.style.cssText =
    "background:var(--comfy-menu-bg,#222);color:var(--fg-color,#ddd);padding:16px;border-radius:8px;width:min(900px,90vw);max-height:85vh;display:flex;flex-direction:column;gap:8px;font-family:sans-serif";
  const title = document.createElement("h3");
  title.textContent = result.request ? "imageInference request of this graph" : "This graph cannot be exported";
  title.style.margin = "0";
  const text = result.request ? JSON.stringify(result.request, null, 2) : errorText(result);
  const area = document.createElement("textarea");
  area.className = "imageinference-request-json";
  area.readOnly = true;
  area.value = text;
  area.style.cssText = "width:100%;height:50vh;font-family:monospace;font-size:12px";
  box.append(title, area);
  const notes = result.notExportable || [];
  if (notes.length) {
    const list = document.createElement("ul");
    list.className = "imageinference-not-exportable";
    list.style.cssText = "max-height:15vh;overflow:auto;margin:0;font-size:12px;color:#e9b96e";
    for (const note of notes) {
      const item = document.createElement("li");
      item.textContent = note;
      list.append(item);
    }
    box.append(list);
  }
  const row = document.createElement("div");
  if (result.request) {
    row.append(
      button("Copy", async () => {
        area.select();
        try {
          await navigator.clipboard.writeText(text);
        } catch {
          document.execCommand("copy");
        }
      }),
      button("Download", () => {
        const link = document.createElement("a");
        link.href = URL.createObjectURL(new Blob([text], { type: "application/json" }));
        link.download = `${result.request.taskUUID || "request"}.json`;
        link.click();
        URL.revokeObjectURL(link.href);
      }),
    );
  }
  row.append(button("Close", () => overlay.remove()));
  box.append(row);
  overlay.append(box);
  overlay.addEventListener("click", (e) => e.target === overlay && overlay.remove());
  document.body.append(overlay);
  return overlay;
}

async function showRequest() {
  const { output } = await app.graphToPrompt();
  const { body } = await postJSON(EXPORT_URL, { prompt: output });
  return showRequestDialog(body);
}

function looksLikeRequest(data) {
  const tasks = Array.isArray(data) ? data : [data];
  return tasks.some((t) => t && typeof t === "object" && t.taskType === "imageInference");
}

async function openRequestFile(file) {
  let data;
  try {
    data = JSON.parse(await file.text());
  } catch {
    return app.handleFile(file, "file_drop");
  }
  if (!looksLikeRequest(data)) {
    return app.handleFile(file, "file_drop"); // a workflow or anything else: ComfyUI's own handling
  }
  const { ok, body } = await postJSON(COMPILE_URL, data);
  if (!ok) {
    showRequestDialog(body);
    return;
  }
  await app.loadGraphData(body.workflow, true, true, file.name.replace(/\.json$/i, ""));
}

// Capture phase: a .json file is ours to look at first; anything else goes on to ComfyUI untouched.
window.addEventListener(
  "drop",
  (event) => {
    const files = event.dataTransfer?.files;
    if (!files || files.length !== 1 || !/\.json$/i.test(files[0].name)) return;
    event.preventDefault();
    event.stopImmediatePropagation();
    openRequestFile(files[0]).catch((err) => console.warn("imageinference: could not open the file", err));
  },
  true,
);

app.registerExtension({
  name: "imageinference.request",
  commands: [
    {
      id: "imageinference.showRequest",
      label: "Show imageInference request",
      icon: "pi pi-code",
      function: showRequest,
    },
  ],
  menuCommands: [{ path: ["Extensions", "imageInference"], commands: ["imageinference.showRequest"] }],
});

// ---------------------------------------------------------------- pulling a model by AIR (docs/models.md)
const PULL_URL = "/imageinference/models/pull";
const AIR_PATTERN =
  /^(?:(?:urn:)?(?:air:)?[a-z0-9]+:[a-z]+:)?[a-z0-9][a-z0-9_-]*:[A-Za-z0-9][A-Za-z0-9._-]*@[A-Za-z0-9][A-Za-z0-9._-]*$/;
const KEY_STORE = "imageinference.apiKey";

// The AIRs a node's widgets name: an AIR widget, or the `model` of each item of a JSON array (the LoRA stack).
function airsOf(node) {
  const found = new Set();
  for (const widget of node.widgets || []) {
    const value = typeof widget.value === "string" ? widget.value.trim() : "";
    if (AIR_PATTERN.test(value)) found.add(value);
    else if (value.startsWith("[")) {
      try {
        for (const item of JSON.parse(value)) {
          if (item && typeof item.model === "string" && AIR_PATTERN.test(item.model)) found.add(item.model);
        }
      } catch {
        // not JSON: nothing to pull
      }
    }
  }
  return [...found];
}

function notify(severity, summary, detail) {
  const toast = app.extensionManager?.toast;
  if (toast?.add) toast.add({ severity, summary, detail, life: severity === "error" ? 12000 : 5000 });
  else console.log(`imageinference: ${summary}: ${detail}`);
}

// The pull routes answer like the task endpoint: with a key configured on the server they need it.
async function pullFetch(url, options = {}) {
  const send = () => {
    const key = localStorage.getItem(KEY_STORE);
    const headers = { ...(options.headers || {}), ...(key ? { Authorization: `Bearer ${key}` } : {}) };
    return fetch(url, { ...options, headers });
  };
  let response = await send();
  if (response.status === 401) {
    const key = window.prompt("This ComfyUI needs its imageInference API key (IMAGEINFERENCE_API_KEY) to pull models:");
    if (key) {
      localStorage.setItem(KEY_STORE, key);
      response = await send();
    }
  }
  return { ok: response.ok, body: await response.json() };
}

const pulls = {}; // AIR -> the last state the server answered (for the tests and other extensions)

async function pullModel(air, { allowUnverified = false, pollMs = 1000 } = {}) {
  let { ok, body } = await pullFetch(PULL_URL, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ air, allowUnverified }),
  });
  if (!ok) {
    notify("error", `Cannot pull ${air}`, errorText(body));
    return (pulls[air] = body);
  }
  notify("info", `Pulling ${air}`, "The files are fetched and verified in the background.");
  while (body.status === "running") {
    pulls[air] = body;
    await new Promise((resolve) => setTimeout(resolve, pollMs));
    ({ body } = await pullFetch(`${PULL_URL}?air=${encodeURIComponent(air)}`));
  }
  pulls[air] = body;
  if (body.status === "done") {
    notify("success", `${air} is ready`, body.fetched.length ? `Fetched ${body.fetched.join(", ")}` : "Already present");
  } else if (body.error?.code === "unverifiedModel" && !allowUnverified &&
             window.confirm(`${body.error.message}\n\nFetch it without a hash check?`)) {
    return pullModel(air, { allowUnverified: true, pollMs });
  } else {
    notify("error", `${air} could not be pulled`, `${body.error?.code}: ${body.error?.message}`);
  }
  return body;
}

app.registerExtension({
  name: "imageinference.pull",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData?.name?.startsWith("ImageInference")) return;
    const original = nodeType.prototype.getExtraMenuOptions;
    nodeType.prototype.getExtraMenuOptions = function (canvas, options) {
      const result = original?.apply(this, arguments);
      for (const air of airsOf(this)) {
        options.push({ content: `Pull model ${air}`, callback: () => pullModel(air) });
      }
      return result;
    };
  },
});

// for the pack's browser tests and for other extensions
window.imageinference = { showRequest, openRequestFile, looksLikeRequest, airsOf, pullModel, pulls };
