// The chat page: the composer, the transcript, and the websocket frames between them.
//
// Streamed text is rendered from Markdown and sanitised in the page (reply.js, markdown.js) until
// `done.html`, which the server renders and sanitises, takes its place. The markup of a new message,
// reply and sidebar entry is cloned from the server's <template> elements.

import { Connection, Replies } from "./connection.js";
import { Sidebar } from "./sidebar.js";
import { LiveReply, clone, decorateCode } from "./reply.js";

const STICK_PX = 48; // this close to the bottom, the transcript follows new text
const STOP_GRACE_MS = 4000; // a stop the server never answered is closed by the page after this

const main = document.getElementById("chat");
const transcript = document.getElementById("transcript");
const welcome = document.getElementById("welcome");
const jump = document.getElementById("jump");
const form = document.getElementById("composer");
const prompt = document.getElementById("prompt");
const modelSelect = document.getElementById("model");
const streamToggle = document.getElementById("stream");
const sendButton = document.getElementById("send");
const stopButton = document.getElementById("stop");
const indicator = document.getElementById("connection");
const counter = document.getElementById("prompt-count");
const promptError = document.getElementById("prompt-error");
const toast = document.getElementById("toast");
const MAX_CHARS = Number(main.dataset.maxChars);
const COUNT_FROM = 0.8; // the counter shows once a message is this close to the limit
const TOAST_MS = 5000;
const SAVED = { model: "chat.model", stream: "chat.stream" }; // localStorage keys

let conversation = main.dataset.conversation ? Number(main.dataset.conversation) : null;
let turn = null; // the reply in flight: {item, userEl, reply (a LiveReply), state, messageId, ...}
let outbox = null; // the one message waiting to be sent: {content, model, stream, userEl}
let stick = true;
const replies = new Replies(); // the seqs of the replies in flight on this page
let resuming = false; // a `resume` was sent and its `resumed` has not come yet

const wsUrl = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${main.dataset.wsPath}`;
const connection = new Connection(wsUrl, { onFrame: received, onState: showConnection, onClose: connectionLost });
// A new visitor gets a session with their first message, not for looking (no session row per page
// view): until then the page has no socket, since the server closes one without a session (4001).
let sessionUrl = main.dataset.sessionUrl || null;
const sidebar = new Sidebar(main, {
  isBusy: (id) => turn !== null && Number(id) === conversation,
  stopReply,
  onDeleted: (id, title) => {
    const current = id === conversation;
    if (current) startOver();
    say(`Deleted “${title}”.${current ? " Started a new chat." : ""}`);
  },
});
let turnEnded = []; // resolvers waiting for the reply in flight to end (stopReply)

// --- the transcript ----------------------------------------------------------------------

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function addMessage(article) {
  welcome.hidden = true;
  transcript.append(article);
  return article;
}

let messageCount = 0;

function addUserMessage(content) {
  const article = addMessage(clone("user-template"));
  const text = article.querySelector(".content");
  text.textContent = content;
  text.id = `sent-${(messageCount += 1)}`; // a Retry button's description
  follow();
  return article;
}

function setNote(article, text) {
  let note = article.querySelector(".note");
  if (!text) return note?.remove();
  if (!note) note = article.querySelector(".bubble").appendChild(element("p", "note"));
  note.textContent = text;
}

function addReply() {
  const reply = new LiveReply(addMessage(clone("reply-template")), { onGrow: follow });
  follow();
  return reply;
}

// Say something to everyone: a visible notice, announced by screen readers (role=status).
function say(text) {
  toast.textContent = text;
  toast.classList.add("shown");
  clearTimeout(say.timer);
  say.timer = setTimeout(() => { toast.classList.remove("shown"); toast.textContent = ""; }, TOAST_MS);
}

function follow() {
  if (stick) transcript.scrollTop = transcript.scrollHeight;
  else jump.hidden = false;
}

transcript.addEventListener("scroll", () => {
  stick = transcript.scrollHeight - transcript.scrollTop - transcript.clientHeight < STICK_PX;
  if (stick) jump.hidden = true;
});
jump.addEventListener("click", () => {
  stick = true;
  jump.hidden = true;
  transcript.scrollTop = transcript.scrollHeight;
  prompt.focus();
});

// Mark a reply as ended: a status mark, an optional message, and a retry for the person.
function endReply(reply, status, message, item) {
  reply.end();
  reply.article.dataset.status = status;
  const bubble = reply.bubble;
  bubble.querySelector(".mark")?.remove();
  if (status === "completed") return;
  const mark = element("p", `mark ${status}`);
  if (status === "failed") mark.setAttribute("role", "alert");
  mark.append(element("span", "", message || (status === "stopped" ? "Stopped" : "Failed")));
  if (item) {
    const retry = element("button", "button small retry", "Retry");
    retry.type = "button";
    if (item.userEl) retry.setAttribute("aria-describedby", item.userEl.querySelector(".content").id);
    retry.addEventListener("click", () => {
      queue(item.content, item.model, item.stream);
      prompt.focus(); // the button stays with the failed reply; the next step happens in the composer
    });
    mark.append(" ", retry);
  }
  const figures = bubble.querySelector(".figures");
  bubble.insertBefore(mark, figures);
}

// --- sending -----------------------------------------------------------------------------

function queue(content, model, stream) {
  if (outbox !== null) return false;
  outbox = { content, model, stream, userEl: addUserMessage(content) };
  if (sessionUrl !== null) startSession(outbox.userEl);
  pump();
  return true;
}

// Ask the server for a session, then open the socket; the waiting message goes once it is open.
async function startSession(userEl) {
  const url = sessionUrl;
  sessionUrl = null;
  try {
    const response = await fetch(url, {
      method: "POST",
      headers: { "X-CSRFToken": document.querySelector('meta[name="csrf-token"]').content },
      credentials: "same-origin",
    });
    if (!response.ok) throw new Error(`the server answered ${response.status}`);
  } catch (err) {
    sessionUrl = url;
    setNote(userEl, `Not sent: ${err.message}. Reload the page and send it again.`);
    return;
  }
  connection.connect();
}

// Send the waiting message if the socket is open and no reply is in flight; else say why it waits.
function pump() {
  if (outbox !== null && turn === null && connection.isOpen) {
    const item = outbox;
    const frame = { type: "send", content: item.content, model: item.model, stream: item.stream, conversation };
    if (connection.send(frame)) {
      outbox = null;
      setNote(item.userEl, "");
      turn = { item, userEl: item.userEl, state: "waiting", reply: addReply(), messageId: null,
               error: null, stopTimer: null };
    }
  }
  if (outbox !== null) {
    setNote(outbox.userEl, turn !== null ? "Queued: sends when the reply ends."
      : "Not sent yet: waiting for the connection.");
  }
  updateControls();
}

function updateControls() {
  const streaming = turn !== null && turn.state !== "stopping";
  // Stop hides when the reply ends: focus would fall to <body> if it stayed on the button.
  if (!streaming && document.activeElement === stopButton) prompt.focus();
  stopButton.hidden = !streaming;
  sendButton.disabled = outbox !== null;
  sendButton.textContent = turn !== null ? "Queue" : "Send";
  main.classList.toggle("busy", turn !== null);
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const content = prompt.value;
  if (!content.trim()) return prompt.focus(); // an empty box sends nothing, and says nothing
  if (content.length > MAX_CHARS) {
    // Refused here, before it enters the transcript: the server would refuse it too.
    promptError.textContent = `Too long to send: ${content.length.toLocaleString("en")} characters; ` +
      `the limit is ${MAX_CHARS.toLocaleString("en")}.`;
    promptError.hidden = false;
    return prompt.focus();
  }
  if (queue(content, modelSelect.value, streamToggle.checked)) {
    prompt.value = "";
    showCount();
  }
  stick = true;
  follow();
});

// Show the length against the limit once it is near, and say at once when it is past.
function showCount() {
  const length = prompt.value.length;
  counter.hidden = length < MAX_CHARS * COUNT_FROM;
  counter.textContent = `${length.toLocaleString("en")} / ${MAX_CHARS.toLocaleString("en")} characters`;
  counter.classList.toggle("over", length > MAX_CHARS);
  if (length <= MAX_CHARS) promptError.hidden = true;
}
prompt.addEventListener("input", showCount);

// The model and the stream toggle are remembered for the next visit (a saved conversation keeps its model).
function remember() {
  try {
    const model = localStorage.getItem(SAVED.model);
    if (conversation === null && [...modelSelect.options].some((option) => option.value === model)) {
      modelSelect.value = model;
    }
    const stream = localStorage.getItem(SAVED.stream);
    if (stream !== null) streamToggle.checked = stream === "1";
    modelSelect.addEventListener("change", () => localStorage.setItem(SAVED.model, modelSelect.value));
    streamToggle.addEventListener("change", () => localStorage.setItem(SAVED.stream, streamToggle.checked ? "1" : "0"));
  } catch (err) {
    console.warn("chat: choices are not remembered (no localStorage)", err);
  }
}

prompt.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    form.requestSubmit();
  } else if (event.key === "Escape" && turn !== null) {
    stop();
  }
});

stopButton.addEventListener("click", () => {
  stop();
  prompt.focus();
});

// Stop the reply: the page freezes it at once and tells the server, which answers with `done`.
function stop() {
  if (turn === null || turn.state === "stopping") return;
  // With the last seq shown, so that the server stores the reply exactly as far as this page shows it.
  const seq = replies.seen.get(turn.messageId)?.seq;
  connection.send(turn.messageId === null ? { type: "stop" } : { type: "stop", message: turn.messageId, seq });
  turn.state = "stopping";
  turn.reply.freeze();
  setStatusText(turn.reply, "Stopping…");
  const stopping = turn;
  turn.stopTimer = setTimeout(() => {
    if (turn === stopping) finishLocally("stopped", "Stopped (the server did not confirm)");
  }, STOP_GRACE_MS);
  updateControls();
}

function setStatusText(reply, text) {
  let mark = reply.article.querySelector(".mark");
  if (!text) return mark?.remove();
  if (!mark) mark = reply.article.querySelector(".bubble").appendChild(element("p", "mark stopped"));
  mark.textContent = text;
}

// Stop the reply in flight (if any); resolve once it has ended.
function stopReply() {
  if (turn === null) return Promise.resolve();
  const ended = new Promise((resolve) => turnEnded.push(resolve));
  stop();
  return ended;
}

// Forget the reply in flight; return it.
function endTurn() {
  const ended = turn;
  clearTimeout(ended.stopTimer);
  turn = null;
  for (const resolve of turnEnded) resolve();
  turnEnded = [];
  return ended;
}

// End the turn without a `done` (the socket closed, or the server never answered a stop).
function finishLocally(status, message) {
  const ended = endTurn();
  endReply(ended.reply, status, message, ended.item);
  pump();
}

// --- frames from the server --------------------------------------------------------------

function received(frame) {
  if (frame.type === "delta") return delta(frame);
  if (frame.type === "start") return started(frame);
  if (frame.type === "done") return done(frame);
  if (frame.type === "error") return failed(frame);
  if (frame.type === "catchup") return caughtUp(frame);
  if (frame.type === "resumed") return resumed(frame);
  if (frame.type === "reply") return announced(frame);
}

function started(frame) {
  if (turn === null) return;
  turn.messageId = frame.message;
  replies.track(frame.message);
  turn.reply.article.dataset.id = frame.message;
  if (turn.state === "waiting") turn.state = "streaming";
  if (conversation !== frame.conversation) {
    conversation = frame.conversation;
    main.dataset.conversation = conversation;
    showing();
    sidebar.add(conversation, frame.title); // the server's title (Conversation.title_from)
    const url = main.dataset.conversationUrl.replace("/0/", `/${conversation}/`);
    history.replaceState(null, "", url);
    document.title = `${frame.title} · chatsite`;
  } else {
    sidebar.touch(conversation);
  }
}

function delta(frame) {
  if (turn === null || frame.message !== turn.messageId) return;
  const text = replies.delta(frame);
  if (text === null) return resume(); // a frame went missing: ask for the rest
  if (turn.state === "stopping" || !text) return;
  turn.reply.append(text);
}

// A reply in flight, from the seq this page has: the one it waits for, or one another tab started.
function caughtUp(frame) {
  if (turn === null) {
    turn = { item: null, model: frame.model, userEl: null, state: "streaming", reply: adoptReply(frame.message),
             messageId: frame.message, error: null, stopTimer: null };
  } else if (turn.messageId === null) {
    turn.messageId = frame.message; // the `send` whose `start` the lost connection took with it
    turn.reply.article.dataset.id = frame.message;
  } else if (turn.messageId !== frame.message) {
    return;
  }
  turn.caught = true;
  if (turn.state === "waiting" || turn.state === "reconnecting") turn.state = "streaming";
  if (turn.state === "streaming") setStatusText(turn.reply, "");
  if (conversation !== frame.conversation) {
    conversation = frame.conversation;
    main.dataset.conversation = conversation;
    showing();
  }
  const text = replies.catchup(frame);
  if (text === null) return resume();
  if (turn.state === "stopping" || !text) return updateControls();
  turn.reply.append(text);
  updateControls();
}

// Another tab or device of the person's started a reply in this conversation: show its message, and
// watch the reply live (its `catchup` answers the `resume`). A page busy with its own reply leaves
// it for the next reload.
function announced(frame) {
  if (frame.conversation !== conversation || turn !== null || replies.seen.has(frame.message)) return;
  const userEl = addUserMessage(frame.content);
  turn = { item: null, model: frame.model, userEl, state: "waiting", reply: adoptReply(frame.message),
           messageId: frame.message, error: null, stopTimer: null };
  replies.track(frame.message);
  sidebar.touch(conversation);
  resume();
  updateControls();
}

// Tell the server which conversation this page shows, to hear of the replies other tabs start in it.
function showing() {
  connection.send({ type: "follow", conversation });
}

// The server has answered a `resume`: a reply it no longer knows of cannot be waited for.
function resumed(frame) {
  resuming = false;
  if (turn !== null && !turn.caught && (turn.state === "reconnecting" || turn.state === "stopping")) {
    if (turn.messageId === null) {
      finishLocally("failed", "The connection was lost before the reply started; it may not have been sent.");
    } else if (!frame.messages.includes(turn.messageId)) {
      finishLocally("stopped", "Stopped: the connection was lost. What arrived is kept.");
    }
  }
}

// Take over the newest reply of the transcript (rendered while it streamed), or add one.
function adoptReply(message) {
  const article = transcript.querySelector(`.message.assistant[data-id="${message}"]`);
  if (article === null) {
    const reply = addReply();
    reply.article.dataset.id = message;
    return reply;
  }
  article.dataset.status = "streaming";
  article.setAttribute("aria-busy", "true");
  article.querySelector(".mark")?.remove();
  article.querySelector(".figures")?.remove();
  // What the server rendered of it stays on screen until the caught-up text is rendered over it.
  article.querySelector(".content").className = "content markdown streaming";
  return new LiveReply(article, { onGrow: follow });
}

// Ask the server for the replies in flight in this conversation, from the seq this page has of each.
function resume() {
  if (!connection.isOpen || (conversation === null && turn === null)) return;
  if (conversation === null) return;
  resuming = true;
  connection.send({ type: "resume", conversation, have: replies.have() });
}

function done(frame) {
  if (turn === null && replies.seen.has(frame.message)) {
    // A reply this page showed as streaming ended while it was away: show it as stored.
    turn = { item: null, model: "", userEl: null, state: "streaming", reply: adoptReply(frame.message),
             messageId: frame.message, error: null, stopTimer: null };
  }
  if (turn === null || frame.message !== turn.messageId) return;
  const ended = endTurn();
  replies.forget(frame.message);
  const reply = ended.reply;
  reply.finish(frame);
  const message = frame.status === "failed" ? `Failed: ${ended.error?.message || "the reply could not be finished."}` : "";
  endReply(reply, frame.status, message, frame.status === "completed" ? null : ended.item);
  follow();
  pump();
}

function failed(frame) {
  if (turn !== null && turn.messageId === null && turn.state !== "stopping") {
    // Refused before it started: the server stored nothing for this send.
    const ended = endTurn();
    if (frame.code === "not_found") startOver({ keepTranscript: true });
    endReply(ended.reply, "failed", `Not sent: ${frame.message}`, ended.item);
    pump();
  } else if (turn !== null) {
    turn.error = frame; // `done` (status failed) follows and shows it
  } else {
    const notice = addMessage(clone("reply-template"));
    notice.removeAttribute("aria-busy");
    notice.dataset.status = "failed";
    notice.querySelector(".bubble").replaceChildren(element("p", "mark failed", frame.message));
    notice.querySelector(".mark").setAttribute("role", "alert");
    follow();
  }
}

// --- the connection ----------------------------------------------------------------------

const STATES = {
  idle: "Ready",
  connecting: "Connecting…",
  open: "Connected",
  waiting: "Reconnecting",
  offline: "Offline",
  expired: "Session expired: reload the page",
};

function showConnection(state, delay) {
  indicator.dataset.state = state;
  let text = STATES[state];
  if (delay !== undefined) text += ` in ${Math.max(1, Math.round(delay / 1000))} s…`;
  indicator.querySelector(".connection-text").textContent = text;
  if (state === "open") {
    if (conversation !== null) showing();
    if (turn !== null || replies.seen.size) resume();
    pump();
  }
  if (state === "expired" && outbox !== null) setNote(outbox.userEl, "Not sent: reload the page and send it again.");
}

// The socket closed: the server keeps the reply going for a while, so wait to reconnect and resume it.
function connectionLost() {
  resuming = false;
  if (turn === null) return;
  if (turn.messageId === null && conversation === null) {
    finishLocally("failed", "The connection was lost before the reply started; it may not have been sent.");
    return;
  }
  turn.caught = false;
  if (turn.state !== "stopping") {
    turn.state = "reconnecting";
    setStatusText(turn.reply, "Reconnecting…");
  }
}

// --- a fresh conversation ----------------------------------------------------------------

function startOver({ keepTranscript = false } = {}) {
  conversation = null;
  main.dataset.conversation = "";
  history.replaceState(null, "", "/");
  document.title = "chatsite";
  showing();
  if (keepTranscript) return;
  transcript.querySelectorAll(".message").forEach((node) => node.remove());
  welcome.hidden = false;
}

// --- start -------------------------------------------------------------------------------

document.querySelectorAll(".message.assistant .markdown").forEach(decorateCode);
// A reply still streaming when the page was loaded (a reload mid-reply): resumed once connected.
for (const article of transcript.querySelectorAll('.message.assistant[data-status="streaming"]')) {
  replies.track(Number(article.dataset.id));
}
transcript.scrollTop = transcript.scrollHeight;
if (sessionUrl === null) connection.connect();
else showConnection("idle");
remember();
showCount();
updateControls();
prompt.focus();
