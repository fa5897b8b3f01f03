// Listens to the demo's /events stream and lists each event as it arrives.
// With ?limit=N in the page's address it stops listening after N events.
const list = document.getElementById("events");
const status = document.getElementById("status");
const limit = Number(new URLSearchParams(location.search).get("limit")) || Infinity;
const source = new EventSource("/events");

source.onopen = () => { status.textContent = "open"; };
source.onerror = () => { status.textContent = "reconnecting"; };
source.addEventListener("tick", (event) => {
  const item = document.createElement("li");
  item.className = "event";
  item.dataset.id = event.lastEventId;
  item.textContent = event.data;
  list.appendChild(item);
  if (list.children.length >= limit) {
    source.close();
    status.textContent = "received " + list.children.length;
  }
});
