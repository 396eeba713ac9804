// Swagger UI on /openapi.json. "Try it out" sends the console's session cookie (same origin) and
// its CSRF token from the page's meta tag as x-csrf-token: the API accepts that pair in place
// of x-api-key (app/api/session.py). No key is ever in the page.
(function () {
  "use strict";
  document.addEventListener("DOMContentLoaded", function () {
    var meta = document.querySelector('meta[name="csrf-token"]');
    window.SwaggerUIBundle({
      url: "/openapi.json",
      dom_id: "#swagger",
      deepLinking: true,
      persistAuthorization: false,
      requestInterceptor: function (request) {
        if (meta) request.headers["x-csrf-token"] = meta.content;
        request.credentials = "same-origin";
        return request;
      },
    });
  });
})();
