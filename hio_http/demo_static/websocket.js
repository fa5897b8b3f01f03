// Echo: opens a WebSocket to the demo's /ws/echo, sends ?count=N text messages (3 by default)
// and one binary message, lists the replies, then closes the socket so the page goes quiet.
// Chat: the form joins /ws/chat on its first message and shows what everyone says.
const wsBase = (location.protocol === "https:" ? "wss://" : "ws://") + location.host;
const replies = document.getElementById("replies");
const status = document.getElementById("status");
const count = Number(new URLSearchParams(location.search).get("count")) || 3;
// Headless browsers that run pages on virtual time (as the tests do) count an open WebSocket
// as idle network and may stop the page mid-exchange; a request whose answer has not begun
// (the demo's /later) keeps the page busy until the echo exchange has closed. It starts once
// the socket is open: a pending request pauses virtual time, which can stall the handshake.
const busy = new AbortController();
const echo = new WebSocket(wsBase + "/ws/echo");
echo.binaryType = "arraybuffer";
let sent = 0;
let received = 0;

function show(list, className, text) {
  const item = document.createElement("li");
  item.className = className;
  item.textContent = text;
  list.appendChild(item);
}

echo.onopen = () => {
  fetch("/later?seconds=15", { signal: busy.signal }).catch(() => {});
  status.textContent = "open";
  for (let i = 1; i <= count; i++) {
    echo.send("hello " + i);
    sent++;
  }
  echo.send(new Uint8Array([1, 2, 3, 250]));
  sent++;
};
echo.onmessage = (event) => {
  received++;
  if (typeof event.data === "string") {
    show(replies, "reply", event.data);
  } else {
    show(replies, "reply binary", "binary " + Array.from(new Uint8Array(event.data)).join(","));
  }
  if (received === sent) {
    echo.close(1000, "done");
  }
};
echo.onerror = () => { status.textContent = "error"; };
echo.onclose = (event) => {
  status.textContent = "sent " + sent + ", received " + received + ", closed " + event.code;
  busy.abort();
};

let chat = null;
const chatList = document.getElementById("chat");
document.getElementById("chat-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = document.getElementById("chat-text");
  if (chat === null || chat.readyState > WebSocket.OPEN) {
    const name = document.getElementById("chat-name").value || "anonymous";
    chat = new WebSocket(wsBase + "/ws/chat?name=" + encodeURIComponent(name));
    chat.onmessage = (message) => show(chatList, "said", message.data);
    chat.onclose = (closing) => show(chatList, "said", "(disconnected: " + closing.code + ")");
    const first = text.value;
    chat.onopen = () => { if (first) chat.send(first); };
  } else if (text.value) {
    chat.send(text.value);
  }
  text.value = "";
});
