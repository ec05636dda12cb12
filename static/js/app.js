// Polling manners for the live partials (elements marked data-poll):
// - no polls while the tab is hidden; one poll as soon as it is shown again;
// - a failed poll (server briefly down) is retried with backoff, and the page says so,
//   instead of silently freezing;
// - each poll element polls again only after its previous answer was swapped in
//   ("load delay" triggers), so two polls of one element never overlap.
(function () {
  "use strict";
  var RESUME = "pressroom:poll";
  var backoff = 0;
  var retryTimers = new Map();
  var pausedWhileHidden = new Set();

  function isPoll(elt) {
    return elt && elt.hasAttribute && elt.hasAttribute("data-poll");
  }

  function banner(text) {
    var el = document.getElementById("connection-status");
    if (!el) return;
    el.textContent = text || "";
    el.hidden = !text;
  }

  document.addEventListener("htmx:beforeRequest", function (evt) {
    var elt = evt.detail.elt;
    if (isPoll(elt) && document.hidden) {
      evt.preventDefault();
      pausedWhileHidden.add(elt);
    }
  });

  document.addEventListener("visibilitychange", function () {
    if (document.hidden) return;
    pausedWhileHidden.forEach(function (elt) {
      if (document.body.contains(elt)) htmx.trigger(elt, RESUME);
    });
    pausedWhileHidden.clear();
  });

  function retryLater(elt) {
    backoff = Math.min(backoff ? backoff * 2 : 1, 30);
    // The words come from the page, in its language.
    var words = document.body.getAttribute("data-connection-lost") || "";
    banner(words.replace("{seconds}", backoff));
    // One timer per poll element: a page with two polls (progress and charts) must retry
    // both, not only the one that failed last.
    clearTimeout(retryTimers.get(elt));
    retryTimers.set(elt, setTimeout(function () {
      retryTimers.delete(elt);
      if (document.body.contains(elt)) htmx.trigger(elt, RESUME);
    }, backoff * 1000));
  }

  document.addEventListener("htmx:sendError", function (evt) {
    if (isPoll(evt.detail.elt)) retryLater(evt.detail.elt);
  });

  document.addEventListener("htmx:responseError", function (evt) {
    var elt = evt.detail.elt;
    var status = evt.detail.xhr ? evt.detail.xhr.status : 0;
    if (isPoll(elt) && status >= 500) retryLater(elt);
  });

  document.addEventListener("htmx:afterRequest", function (evt) {
    // A successful poll has already swapped its element out (outerHTML), so htmx fires this
    // on the detached element (never reaching document) and again on the nearest ancestor
    // still in the page, as detail.elt; only requestConfig.elt still names the poll element.
    var config = evt.detail.requestConfig;
    if (isPoll(config ? config.elt : evt.detail.elt) && evt.detail.successful) {
      if (backoff) banner("");
      backoff = 0;
    }
  });
})();
