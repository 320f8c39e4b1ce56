// The catsdogs page: pick, drop or paste photos, see each one's label, and its Grad-CAM overlay.
//
// Plain JavaScript with no build step and no library, so the page works offline under the
// server's Content-Security-Policy (default-src 'self'): nothing here is inline, and every
// string that comes from the server or from a file name is written with textContent, never
// parsed as HTML.
//
// Each photo is sent in its own request, a few at a time, rather than in batches of
// max_files. The server's micro-batcher already merges requests that arrive together into
// one model call, so batching here would buy no speed; one request per photo shows each
// result as soon as it is ready, times each photo on its own, and keeps one oversized or
// unsupported file (a whole-request 413 or 415) from failing the photos sent with it.
//
// A module (strict, scoped, deferred): input.js takes the photos in, cards.js draws them, and this
// file talks to the server.
import {
  createCard,
  describePredictionError,
  formatBytes,
  formatPercent,
  releaseCard,
  setCardState,
  showCardError,
  showCardNote,
  showCardResult,
  showOverlay,
  summarize,
  updateExplainButton,
  uploadName,
} from "./cards.js";
import { wirePhotoInput } from "./input.js";

// Enough requests in flight to keep the server's batcher fed without filling its queue.
const CONCURRENT_REQUESTS = 4;
// How often one photo is retried when the server says it is busy (503), before giving up.
const BUSY_RETRIES = 5;
const DEFAULT_RETRY_SECONDS = 2;
const KEY_STORAGE_NAME = "catsdogs-api-key";

const elements = {};
const state = {
  ready: false,
  explain: false,
  maxUploadBytes: 0,
  apiKey: readStoredKey(),
  queue: [],
  inFlight: 0,
  cards: [],
  modelRetryTimer: null,
  announceTimer: null,
  announcements: [],
};

function readStoredKey() {
  try {
    return window.sessionStorage.getItem(KEY_STORAGE_NAME) || "";
  } catch {
    // Storage can be switched off; the key then lasts until the page is closed.
    return "";
  }
}

function storeKey(key) {
  state.apiKey = key;
  try {
    window.sessionStorage.setItem(KEY_STORAGE_NAME, key);
  } catch {
    // Nothing to do: the key stays in memory for this page.
  }
}

// --- Talking to the server -------------------------------------------------------------

async function callApi(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (state.apiKey) {
    headers.set("Authorization", `Bearer ${state.apiKey}`);
  }
  return fetch(path, { ...options, headers, cache: "no-store" });
}

// Turn an error response into {status, message, retrySeconds}, whatever its body holds.
async function readFailure(response) {
  let message = "";
  try {
    const body = await response.json();
    if (body && body.error && typeof body.error.message === "string") {
      message = body.error.message;
    } else if (body && typeof body.detail === "string") {
      message = body.detail;
    }
  } catch {
    // Not JSON (a proxy's error page, say): fall back to the status line below.
  }
  if (!message) {
    message = `The server answered ${response.status} ${response.statusText}.`.replace(" .", ".");
  }
  const retryAfter = Number.parseFloat(response.headers.get("Retry-After") || "");
  const retrySeconds = Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter : DEFAULT_RETRY_SECONDS;
  return { status: response.status, message, retrySeconds };
}

async function loadModel() {
  window.clearTimeout(state.modelRetryTimer);
  elements.modelLoading.textContent = "Connecting to the server…";
  let response;
  try {
    response = await callApi("v1/model");
  } catch {
    showUnreachable();
    return;
  }
  if (!response.ok) {
    const failure = await readFailure(response);
    if (failure.status === 401) {
      showKeyNeeded();
    } else if (failure.status === 503) {
      const seconds = Math.ceil(failure.retrySeconds);
      showNotice(`The server is not ready yet: ${failure.message} Trying again in ${seconds} s.`, {
        retry: true,
        tone: "info",
      });
      elements.modelLoading.textContent = "Waiting for the model to load…";
      state.modelRetryTimer = window.setTimeout(loadModel, seconds * 1000);
    } else {
      showNotice(`The model description could not be read: ${failure.message}`, { retry: true });
      elements.modelLoading.textContent = "No model information.";
    }
    return;
  }
  showModel(await response.json());
  hideNotice();
  state.ready = true;
  pump();
}

function showModel(model) {
  state.explain = model.explain === true;
  state.maxUploadBytes = Number.isFinite(Number(model.max_upload_bytes)) ? Number(model.max_upload_bytes) : 0;
  elements.modelName.textContent = String(model.name ?? "unnamed");
  const classes = Array.isArray(model.classes) ? model.classes.map(String) : [];
  elements.modelClasses.textContent = classes.length ? classes.join(", ") : "unknown";
  const accuracy = Number(model.test_accuracy);
  elements.modelAccuracy.textContent =
    model.test_accuracy === null || model.test_accuracy === undefined || !Number.isFinite(accuracy)
      ? "not measured"
      : formatPercent(accuracy);
  const precision = model.precision ? String(model.precision) : "unknown";
  const exportFormat = model.format ? ` (${String(model.format).toUpperCase()})` : "";
  elements.modelPrecision.textContent = precision + exportFormat;
  elements.modelFacts.hidden = false;
  elements.modelLoading.hidden = true;
  for (const card of state.cards) {
    updateExplainButton(card, state.explain);
  }
}

function showUnreachable() {
  state.ready = false;
  elements.modelLoading.textContent = "Not connected.";
  showNotice(
    `The server at ${window.location.host} cannot be reached. Check that catsdogs serve is running, then try again.`,
    { retry: true },
  );
}

// The page words this one itself: the server's 401 message is written for API clients.
function showKeyNeeded() {
  state.ready = false;
  elements.modelLoading.textContent = "An API key is required.";
  const lead = state.apiKey ? "The API key was not accepted." : "This server requires an API key.";
  showNotice(`${lead} Enter the key the server was started with (its CATSDOGS_API_KEY).`, {
    key: true,
    tone: "info",
  });
}

function showNotice(message, { retry = false, key = false, tone = "error" } = {}) {
  elements.noticeMessage.textContent = message;
  elements.retryButton.hidden = !retry;
  elements.keyForm.hidden = !key;
  elements.notice.classList.toggle("notice-info", tone === "info");
  elements.notice.hidden = false;
  if (key) {
    elements.keyInput.value = "";
    elements.keyInput.focus();
  }
}

function hideNotice() {
  elements.notice.hidden = true;
}

// --- Sending photos --------------------------------------------------------------------

function addFiles(fileList) {
  const files = Array.from(fileList || []).filter((file) => file instanceof File);
  if (!files.length) {
    return;
  }
  // The newest photos go first, in the order they were chosen.
  const batch = document.createDocumentFragment();
  for (const file of files) {
    const card = createCard(elements.cardTemplate, file, toggleExplanation);
    batch.append(card.root);
    state.cards.push(card);
    state.queue.push(card);
  }
  elements.cards.prepend(batch);
  updateSummary();
  pump();
}

function pump() {
  while (state.ready && state.inFlight < CONCURRENT_REQUESTS && state.queue.length) {
    send(state.queue.shift());
  }
  updateSummary();
}

async function send(card) {
  if (state.maxUploadBytes && card.file.size > state.maxUploadBytes) {
    // The server would refuse it with 413 anyway; saying so now spares the upload.
    failCard(
      card,
      `This file is ${formatBytes(card.file.size)}, and the server accepts at most ` +
        `${formatBytes(state.maxUploadBytes)} per photo. Send a smaller copy of it.`,
    );
    return;
  }
  state.inFlight += 1;
  setCardState(card, "Classifying…");
  const form = new FormData();
  form.append("files", card.file, uploadName(card));
  const started = performance.now();
  let response;
  try {
    response = await callApi("v1/predict", { method: "POST", body: form });
  } catch {
    // The photo is not lost: it waits in the queue until the server is back.
    state.inFlight -= 1;
    if (!card.removed) {
      setCardState(card, "Waiting for the server…");
      state.queue.unshift(card);
    }
    showUnreachable();
    return;
  }
  const milliseconds = performance.now() - started;
  try {
    if (card.removed) {
      return;
    }
    if (response.ok) {
      const body = await response.json();
      const prediction = Array.isArray(body.predictions) ? body.predictions[0] : null;
      if (!prediction) {
        failCard(card, "The server's answer held no prediction for this photo.", milliseconds);
      } else if (prediction.error) {
        failCard(card, describePredictionError(prediction.error), milliseconds);
      } else {
        showCardResult(card, prediction, milliseconds, state.explain);
        const answer = prediction.abstained === true ? `unsure (leans to ${prediction.label})` : prediction.label;
        announce(`${card.name}: ${answer}, ${formatPercent(Number(prediction.probability))}.`);
        updateSummary();
      }
      return;
    }
    const failure = await readFailure(response);
    if (failure.status === 401) {
      setCardState(card, "Waiting for an API key…");
      state.queue.unshift(card);
      showKeyNeeded();
    } else if (failure.status === 503 && card.busyRetries < BUSY_RETRIES) {
      card.busyRetries += 1;
      const seconds = Math.ceil(failure.retrySeconds);
      setCardState(card, `The server is busy; trying again in ${seconds} s…`);
      window.setTimeout(() => {
        if (!card.removed) {
          state.queue.unshift(card);
          pump();
        }
      }, seconds * 1000);
    } else {
      failCard(card, failure.message, milliseconds);
    }
  } catch {
    failCard(card, "The server's answer could not be read.", milliseconds);
  } finally {
    state.inFlight -= 1;
    pump();
  }
}

function failCard(card, message, milliseconds) {
  showCardError(card, message, milliseconds);
  announce(`${card.name} could not be classified: ${message}`);
  updateSummary();
}

async function toggleExplanation(card) {
  if (!state.explain || !card.result || card.explainBusy) {
    return;
  }
  if (card.overlayUrl) {
    showOverlay(card, !card.showingOverlay);
    return;
  }
  card.explainBusy = true;
  card.explainButton.textContent = "Working…";
  card.explainButton.disabled = true;
  try {
    const form = new FormData();
    form.append("files", card.file, uploadName(card));
    const response = await callApi("v1/explain", { method: "POST", body: form });
    if (!response.ok) {
      const failure = await readFailure(response);
      announce(`Grad-CAM for ${card.name} failed: ${failure.message}`);
      showCardNote(card, `Grad-CAM failed: ${failure.message}`);
      return;
    }
    card.overlayUrl = URL.createObjectURL(await response.blob());
    showOverlay(card, true);
  } catch {
    showCardNote(card, "Grad-CAM failed: the server could not be reached.");
  } finally {
    card.explainBusy = false;
    card.explainButton.disabled = false;
    if (!card.showingOverlay) {
      card.explainButton.textContent = "Show Grad-CAM";
    }
  }
}

function clearCards() {
  for (const card of state.cards) {
    releaseCard(card);
  }
  state.cards = [];
  state.queue = [];
  elements.cards.replaceChildren();
  announce("All photos cleared.");
  updateSummary();
  elements.dropZone.focus();
}

function updateSummary() {
  elements.toolbar.hidden = state.cards.length === 0;
  elements.summary.textContent = state.cards.length ? summarize(state.cards) : "";
}

// Results can arrive many at once; gather them so a screen reader reads one short message.
function announce(message) {
  state.announcements.push(message);
  window.clearTimeout(state.announceTimer);
  state.announceTimer = window.setTimeout(() => {
    const messages = state.announcements.splice(0);
    elements.announcer.textContent =
      messages.length > 3 ? `${messages.length} photos done. ${elements.summary.textContent}.` : messages.join(" ");
  }, 400);
}

function start() {
  const byId = (id) => document.getElementById(id);
  Object.assign(elements, {
    modelFacts: byId("model-facts"),
    modelName: byId("model-name"),
    modelClasses: byId("model-classes"),
    modelAccuracy: byId("model-accuracy"),
    modelPrecision: byId("model-precision"),
    modelLoading: byId("model-loading"),
    notice: byId("notice"),
    noticeMessage: byId("notice-message"),
    keyForm: byId("key-form"),
    keyInput: byId("key-input"),
    retryButton: byId("retry-button"),
    dropZone: byId("drop-zone"),
    fileInput: byId("file-input"),
    toolbar: byId("toolbar"),
    summary: byId("summary"),
    clearButton: byId("clear-button"),
    cards: byId("cards"),
    announcer: byId("announcer"),
    cardTemplate: byId("card-template"),
  });
  wirePhotoInput(elements, addFiles);
  elements.clearButton.addEventListener("click", clearCards);
  elements.retryButton.addEventListener("click", loadModel);
  elements.keyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    storeKey(elements.keyInput.value.trim());
    loadModel();
  });
  loadModel();
}

start();
