// The conversation list: the phone menu, new entries, rename and delete.

const DRAWER_MAX_PX = 760; // chat.css: below this width the list is a drawer
const CONFIRM_MS = 4000; // how long a first press on Delete waits for the second

function csrfToken() {
  return document.querySelector('meta[name="csrf-token"]').content;
}

// POST JSON to one of the page's endpoints; return the parsed answer or throw an Error to show.
async function post(url, body) {
  const response = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
    body: JSON.stringify(body),
    credentials: "same-origin",
  });
  if (response.status === 404) throw new Error("That conversation no longer exists.");
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.error || `The server answered ${response.status}.`);
  return data;
}

export class Sidebar {
  constructor(main, { isBusy, stopReply, onDeleted }) {
    this.list = document.getElementById("conversations");
    this.empty = document.getElementById("empty-list");
    this.nav = document.getElementById("sidebar");
    this.menu = document.getElementById("menu-button");
    this.urls = {
      rename: main.dataset.renameUrl,
      delete: main.dataset.deleteUrl,
      conversation: main.dataset.conversationUrl,
    };
    this.isBusy = isBusy;
    this.stopReply = stopReply;
    this.onDeleted = onDeleted;
    // While the drawer is open on a phone, the page behind it is inert: Tab stays in the drawer
    // and nothing focusable hides under it (WCAG 2.2 "focus not obscured").
    this.behind = [document.querySelector(".topbar"), main, document.querySelector(".skip-link")];
    this.menu.addEventListener("click", () => this.toggle());
    document.getElementById("close-drawer").addEventListener("click", () => this.toggle(false));
    this.nav.addEventListener("keydown", (event) => { if (event.key === "Tab") this.trapTab(event); });
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && this.isOpen() && !event.defaultPrevented) this.toggle(false);
    });
    this.list.addEventListener("click", (event) => this.clicked(event));
    document.addEventListener("click", (event) => {
      if (this.isOpen() && !this.nav.contains(event.target) && !this.menu.contains(event.target)) this.toggle(false);
    });
    // A phone turned into a wide screen has no drawer: close it rather than leave the page inert.
    window.matchMedia(`(max-width: ${DRAWER_MAX_PX}px)`).addEventListener("change", (event) => {
      if (!event.matches && this.isOpen()) this.toggle(false, { focus: false });
    });
  }

  // Keep Tab and Shift+Tab inside the open drawer, wrapping at its ends.
  trapTab(event) {
    if (!this.isOpen()) return;
    const stops = [...this.nav.querySelectorAll("a[href], button, input")].filter((node) => node.offsetParent !== null);
    if (stops.length === 0) return;
    const [first, last] = [stops[0], stops[stops.length - 1]];
    if (!event.shiftKey && document.activeElement === last) {
      event.preventDefault();
      first.focus();
    } else if (event.shiftKey && document.activeElement === first) {
      event.preventDefault();
      last.focus();
    }
  }

  url(kind, id) {
    return this.urls[kind].replace("/0/", `/${id}/`);
  }

  isOpen() {
    return this.menu.getAttribute("aria-expanded") === "true";
  }

  // Show or hide the list on a narrow screen.
  toggle(open = !this.isOpen(), { focus = true } = {}) {
    this.menu.setAttribute("aria-expanded", String(open));
    document.body.classList.toggle("sidebar-open", open);
    for (const node of this.behind) node.inert = open;
    if (!focus) return;
    // The drawer turns visible at once when opening (chat.css), so it can take focus now.
    if (open) this.nav.querySelector(".conversation.current a, #new-chat")?.focus();
    else this.menu.focus();
  }

  // Put a new conversation at the top of the list and mark it current.
  add(id, title) {
    this.list.querySelectorAll(".current").forEach((item) => {
      item.classList.remove("current");
      item.querySelector("a").removeAttribute("aria-current");
    });
    const item = document.getElementById("conversation-template").content.firstElementChild.cloneNode(true);
    item.classList.add("current");
    item.dataset.id = id;
    const link = item.querySelector(".conversation-link");
    link.href = this.url("conversation", id);
    link.setAttribute("aria-current", "page");
    this.setTitle(item, title);
    this.list.prepend(item);
    this.empty.hidden = true;
  }

  // Move a conversation to the top (it was just used).
  touch(id) {
    const item = this.item(id);
    if (item && item !== this.list.firstElementChild) this.list.prepend(item);
  }

  item(id) {
    return this.list.querySelector(`li[data-id="${Number(id)}"]`);
  }

  setTitle(item, title) {
    const shown = title || "Untitled conversation";
    item.querySelector(".conversation-link").textContent = shown;
    item.querySelector(".rename").setAttribute("aria-label", `Rename “${shown}”`);
    item.querySelector(".delete").setAttribute("aria-label", `Delete “${shown}”`);
  }

  clicked(event) {
    const button = event.target.closest("button");
    if (!button) return;
    const item = button.closest("li");
    if (button.classList.contains("rename")) this.startRename(item);
    else if (button.classList.contains("delete")) this.confirmDelete(item, button);
  }

  // Replace the title by a small form: Enter saves, Escape cancels.
  startRename(item) {
    const link = item.querySelector(".conversation-link");
    const form = document.createElement("form");
    form.className = "rename-form";
    const input = document.createElement("input");
    input.type = "text";
    input.value = link.textContent;
    input.setAttribute("aria-label", "New title");
    form.append(input);
    link.hidden = true;
    item.querySelector(".conversation-actions").hidden = true;
    item.prepend(form);
    input.focus();
    input.select();
    // Escape, Enter and the blur that follows each would close it: only the first one does.
    let closed = false;
    const close = () => {
      if (closed) return;
      closed = true;
      form.remove();
      link.hidden = false;
      item.querySelector(".conversation-actions").hidden = false;
      item.querySelector(".rename").focus();
    };
    input.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.preventDefault();
        close();
      }
    });
    input.addEventListener("blur", () => { if (form.isConnected && !form.dataset.saving) close(); });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const title = input.value.trim();
      if (!title) return close();
      form.dataset.saving = "1";
      try {
        const data = await post(this.url("rename", item.dataset.id), { title });
        this.setTitle(item, data.title);
      } catch (err) {
        window.alert(err.message);
      }
      close();
    });
  }

  // Delete on a second click within a few seconds, so one slip loses nothing. A reply still
  // streaming into the conversation is stopped first (its record is written), then it is deleted.
  async confirmDelete(item, button) {
    const id = item.dataset.id;
    const icon = button.querySelector("span");
    if (!button.classList.contains("confirm")) {
      const busy = this.isBusy(id);
      button.classList.add("confirm");
      button.dataset.label = button.getAttribute("aria-label");
      button.setAttribute("aria-label", busy ? "Press again to stop the reply and delete" : "Press again to delete");
      icon.textContent = busy ? "Stop & delete?" : "Delete?";
      button.resetTimer = setTimeout(() => {
        button.classList.remove("confirm");
        button.setAttribute("aria-label", button.dataset.label);
        icon.textContent = "✕";
      }, CONFIRM_MS);
      return;
    }
    clearTimeout(button.resetTimer);
    const title = item.querySelector(".conversation-link").textContent;
    icon.textContent = "Deleting…";
    try {
      if (this.isBusy(id)) await this.stopReply();
      await post(this.url("delete", id), {});
    } catch (err) {
      icon.textContent = "✕";
      button.classList.remove("confirm");
      button.setAttribute("aria-label", button.dataset.label);
      window.alert(err.message);
      return;
    }
    const next = item.nextElementSibling || item.previousElementSibling;
    item.remove();
    this.empty.hidden = this.list.children.length > 0;
    (next?.querySelector("a") || document.getElementById("new-chat")).focus();
    this.onDeleted(Number(id), title);
  }
}
