// Starts GraphiQL in #graphiql. The page's data-config says where the API is
// and which headers to send (the demo token), so this file never changes
// with them and can be cached for good.
(function () {
  "use strict";
  var root = document.getElementById("graphiql");
  var config = JSON.parse(root.dataset.config);

  // Dialogs lock the page's scroll with a <style> element they add
  // (react-remove-scroll); the page's CSP admits it by this nonce, which
  // that library reads from webpack's global.
  window.__webpack_nonce__ = document.currentScript.nonce;

  function absolute(path, websocket) {
    var url = new URL(path, window.location.href);
    if (websocket) {
      url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    }
    return url.toString();
  }

  var fetcher = GraphiQL.createFetcher({
    url: absolute(config.endpoint, false),
    subscriptionUrl: absolute(config.subscriptionEndpoint, true),
    headers: config.headers,
    wsConnectionParams: config.wsConnectionParams,
  });

  ReactDOM.createRoot(root).render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultEditorToolsVisibility: true,
    }),
  );
})();
