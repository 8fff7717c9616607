// Keyboard shortcuts and drag-and-drop ranking for the labelling pages. Plain JavaScript, no build step.
// Shortcuts are ignored while a text box has focus, so typing a skip reason or an edit never triggers them.
(function () {
  "use strict";
  const form = document.getElementById("label-form");
  const cont = document.getElementById("continue");
  const typing = (el) => el && (el.tagName === "TEXTAREA" || (el.tagName === "INPUT" && el.type === "text") || el.type === "password");

  if (!form) {
    // The gold-feedback page: Enter continues to the next task.
    if (cont) document.addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); window.location = cont.href; } });
    return;
  }
  const kind = form.dataset.kind;
  const started = performance.now();
  const message = document.getElementById("form-message");
  const list = document.getElementById("ranking-list");
  const rankingInput = document.getElementById("ranking");
  let placed = 0; // ranking: how many answers were put in place with the number keys

  function syncRanking() {
    if (!list) return;
    rankingInput.value = Array.from(list.children).map((li) => li.dataset.id).join(",");
  }

  function pick(key) {
    // Move the answer with this number to the next place (after those already picked).
    const item = list.querySelector(`li[data-key="${key}"]`);
    if (!item || item.classList.contains("placed")) return;
    list.insertBefore(item, list.children[placed] || null);
    item.classList.add("placed");
    placed += 1;
    syncRanking();
  }

  function resetPicks() {
    placed = 0;
    list.querySelectorAll("li").forEach((li) => li.classList.remove("placed"));
  }

  form.addEventListener("submit", (e) => {
    form.elements.seconds.value = ((performance.now() - started) / 1000).toFixed(1);
    syncRanking();
    if (kind === "pairwise" && !form.querySelector('input[name="preference"]:checked')) {
      e.preventDefault();
      message.textContent = "Choose which answer is better first (keys 1-7).";
    } else if (kind === "rating" && !form.querySelector('input[name="rating"]:checked')) {
      e.preventDefault();
      message.textContent = "Choose a rating first (keys 1-7).";
    } else if (kind === "binary" && !(e.submitter && e.submitter.name === "label")) {
      e.preventDefault();
      message.textContent = "Choose Good (key g) or Bad (key b).";
    }
  });

  document.addEventListener("keydown", (e) => {
    if (typing(e.target)) {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey) && e.target.tagName === "TEXTAREA") { e.preventDefault(); form.requestSubmit(); }
      // Enter in the binary reason box would submit with the first button (Good): ask for the choice instead
      if (e.key === "Enter" && e.target.id === "binary-reason") { e.preventDefault(); e.target.blur(); message.textContent = "Now choose Good (key g) or Bad (key b)."; }
      if (e.key === "Escape") e.target.blur();
      return;
    }
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (/^[1-9]$/.test(e.key)) {
      if (kind === "ranking") { pick(e.key); e.preventDefault(); return; }
      const radio = form.querySelector(`input[type="radio"][data-key="${e.key}"]`);
      if (radio) { radio.checked = true; message.textContent = ""; e.preventDefault(); }
      return;
    }
    if (kind === "ranking" && e.key === "Backspace") { resetPicks(); e.preventDefault(); return; }
    if (kind === "ranking" && (e.key === "ArrowUp" || e.key === "ArrowDown") && e.target.parentElement === list) {
      const li = e.target;
      if (e.key === "ArrowUp" && li.previousElementSibling) list.insertBefore(li, li.previousElementSibling);
      if (e.key === "ArrowDown" && li.nextElementSibling) list.insertBefore(li.nextElementSibling, li);
      li.focus(); syncRanking(); e.preventDefault(); return;
    }
    if (kind === "binary" && (e.key === "g" || e.key === "b")) {
      // the button itself submits, so its value ("good" / "bad") is sent as `label`
      form.requestSubmit(document.getElementById(e.key === "g" ? "label-good" : "label-bad"));
      e.preventDefault(); return;
    }
    if (e.key === "u") { const box = document.getElementById("unsafe"); box.checked = !box.checked; return; }
    if (e.key === "s") { const reason = document.getElementById("skip-reason"); if (reason) { reason.focus(); e.preventDefault(); } return; }
    if (e.key === "Enter") { e.preventDefault(); form.requestSubmit(); }
  });

  if (list) {
    let dragged = null;
    list.addEventListener("dragstart", (e) => { dragged = e.target.closest("li"); e.dataTransfer.effectAllowed = "move"; });
    list.addEventListener("dragover", (e) => {
      e.preventDefault();
      const over = e.target.closest("li");
      if (!dragged || !over || over === dragged) return;
      const box = over.getBoundingClientRect();
      list.insertBefore(dragged, e.clientY < box.top + box.height / 2 ? over : over.nextSibling);
    });
    list.addEventListener("drop", (e) => { e.preventDefault(); dragged = null; syncRanking(); });
    list.addEventListener("dragend", () => { dragged = null; syncRanking(); });
    syncRanking();
  }
})();
