// The HTTP API's page: Swagger UI over the document Envoy serves beside it. Nothing is loaded from
// elsewhere: no validator badge (it asks validator.swagger.io), no other documents.
/* global SwaggerUIBundle */
window.ui = SwaggerUIBundle({
  url: "/openapi.yaml",
  dom_id: "#swagger-ui",
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  validatorUrl: null,
  deepLinking: true,
  displayRequestDuration: true,
  // "Try it out" sends requests to this origin; on the TLS port, Authorize takes a token first.
  supportedSubmitMethods: ["get", "post"],
  defaultModelsExpandDepth: 0,
});
