// The review queue's keyboard (templates/review_queue.html): j / k next and previous,
// a approve, r reject (focuses the reason; Enter sends it), e edit, o open, ? shortcuts.
// Keys are ignored while typing in a field and with Ctrl, Alt or Meta held. Moving is
// instant in the list; the pane follows by htmx (the row links carry hx-get). A decision
// is the pane's own form, sent by htmx; its answer is the list, the next article's pane
// and the counts, so the next key acts on the next article with no page load.
(function () {
  "use strict";
  if (!document.getElementById("review-layout")) return;

  // A decision in flight: keys wait for its answer (the pane it acts on is about to go).
  var deciding = false;
  // A key that waits for the pane to show the selected article (or for a decision's
  // answer): pressed quickly after j, "a" approves the article that j selected.
  var pending = null;

  function rows() {
    return Array.prototype.slice.call(document.querySelectorAll("#review-list .review-row"));
  }

  function current() {
    return document.querySelector("#review-list .review-row[aria-current='true']");
  }

  function mark(row) {
    rows().forEach(function (r) {
      r.removeAttribute("aria-current");
      r.classList.remove("selected");
    });
    row.setAttribute("aria-current", "true");
    row.classList.add("selected");
    row.scrollIntoView({ block: "nearest" });
  }

  function choose(row) {
    if (!row) return;
    mark(row);
    var link = row.querySelector(".review-row-link");
    link.focus({ preventScroll: true });
    link.click(); // htmx loads the pane (hx-get), replacing a load still on its way
  }

  function move(step) {
    var list = rows();
    var at = list.indexOf(current());
    var next = at === -1 ? list[0] : list[at + step];
    if (next) {
      choose(next);
      return;
    }
    // Past the end of this page: the next (or previous) page of the list, by htmx.
    var section = document.getElementById("review-list");
    var url = section && section.getAttribute(step > 0 ? "data-next-page" : "data-prev-page");
    if (!url) return;
    htmx.ajax("GET", url, { target: "#review-list", swap: "outerHTML" }).then(function () {
      var fresh = rows();
      choose(step > 0 ? fresh[0] : fresh[fresh.length - 1]);
    });
  }

  function decide(decision) {
    var form = document.querySelector("#review-pane form[data-decision='" + decision + "']");
    if (!form) return;
    // Sent by htmx.ajax rather than form.requestSubmit(): a pane swapped in a moment ago
    // may not have its htmx handlers yet (they come as it settles), and a plain submit
    // would load the page.
    htmx.ajax("POST", form.getAttribute("hx-post"),
              { source: form, target: "#review-list", swap: "outerHTML" });
  }

  function follow(marker) {
    var link = document.querySelector("#review-pane [" + marker + "]");
    if (link) window.location.assign(link.href);
  }

  function reason() {
    var field = document.getElementById("review-reason");
    if (field) field.focus();
  }

  function toggleShortcuts() {
    var help = document.getElementById("review-shortcuts");
    if (!help) return;
    help.open = !help.open;
    if (help.open) help.scrollIntoView({ block: "nearest" });
  }

  var ACTIONS = {
    j: function () { move(1); },
    k: function () { move(-1); },
    a: function () { decide("approved"); },
    r: reason,
    e: function () { follow("data-review-edit"); },
    o: function () { follow("data-review-open"); },
    "?": toggleShortcuts
  };

  function typing(el) {
    return el && (el.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(el.tagName));
  }

  document.addEventListener("keydown", function (evt) {
    if (evt.defaultPrevented || evt.ctrlKey || evt.metaKey || evt.altKey || evt.isComposing) {
      return;
    }
    if (typing(evt.target)) {
      // Escape leaves the reason field, so the next keys are shortcuts again.
      if (evt.key === "Escape" && evt.target.id === "review-reason") evt.target.blur();
      return;
    }
    var action = ACTIONS[evt.key];
    if (!action) return;
    evt.preventDefault(); // "r" must not land in the reason field it focuses
    if (evt.repeat && evt.key === "a") return; // a held down approves one, not a run
    var onPane = "areo".indexOf(evt.key) !== -1;
    if (evt.key !== "?" && (deciding || (onPane && !paneShowsSelection()))) {
      pending = evt.key;
      return;
    }
    action();
  });

  function paneShowsSelection() {
    var row = current();
    var pane = document.getElementById("review-pane");
    return !row || !pane
      || pane.getAttribute("data-article-id") === row.getAttribute("data-article-id");
  }

  function isDecision(elt) {
    return elt && elt.matches && elt.matches("form[data-decision]");
  }

  document.addEventListener("htmx:beforeRequest", function (evt) {
    if (isDecision(evt.detail.elt)) deciding = true;
  });

  // After a decision, focus goes to the newly selected row: htmx would otherwise put it
  // back in the next article's reason field (same id), where a, j, k would be typed.
  var refocus = false;

  document.addEventListener("htmx:afterRequest", function (evt) {
    // The form has been swapped out by now: requestConfig.elt still names it.
    var config = evt.detail.requestConfig;
    if (isDecision(config ? config.elt : evt.detail.elt)) {
      deciding = false;
      refocus = evt.detail.successful;
    }
    if (!evt.detail.successful) pending = null; // what it waited for will not come
  });

  document.addEventListener("htmx:afterSettle", function () {
    var active = document.activeElement;
    var lost = !active || active === document.body || !document.body.contains(active);
    if (!refocus && !lost) return;
    var row = current();
    var link = row && row.querySelector(".review-row-link");
    if (!link) return;
    // A rejection without a reason answers with its pane only: the field keeps focus.
    if (refocus && active && active.id === "review-reason" && active.getAttribute("aria-invalid")) {
      refocus = false;
      return;
    }
    refocus = false;
    link.focus({ preventScroll: true });
  });

  document.addEventListener("htmx:afterSettle", function () {
    if (pending === null || deciding || !paneShowsSelection()) return;
    var key = pending;
    pending = null;
    ACTIONS[key]();
  });
})();
