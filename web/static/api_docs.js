/*
 * The API reference page (/api/docs): fetches the generated OpenAPI document and renders it: an index
 * by tag, each operation (method, path, parameters, request body, responses) and every schema, with
 * links between them. No framework, no build step, no external assets. Everything from the document
 * goes in through textContent/attributes, never innerHTML.
 */
(function () {
  "use strict";

  var root = document.getElementById("api-docs");
  if (!root) return;
  var REF_PREFIX = "#/components/schemas/";
  var METHODS = ["get", "put", "post", "patch", "delete"];
  var spec = null;

  // -- small DOM helpers ------------------------------------------------------------------------
  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (attrs[k] === null || attrs[k] === undefined || attrs[k] === false) return;
      if (k === "text") node.textContent = attrs[k];
      else node.setAttribute(k, attrs[k] === true ? "" : attrs[k]);
    });
    (children || []).forEach(function (c) {
      if (c === null || c === undefined) return;
      node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return node;
  }

  // Markdown-ish text: paragraphs, and `code` spans. Nothing else is interpreted.
  function inline(text) {
    var frag = document.createDocumentFragment();
    String(text || "").split(/(`[^`]+`)/).forEach(function (part) {
      if (/^`[^`]+`$/.test(part)) frag.appendChild(el("code", { text: part.slice(1, -1) }));
      else if (part) frag.appendChild(document.createTextNode(part));
    });
    return frag;
  }

  function prose(text, cls) {
    var box = el("div", { class: cls || "api-prose" });
    String(text || "").split(/\n\s*\n/).forEach(function (para) {
      var p = el("p");
      p.appendChild(inline(para.replace(/\s*\n\s*/g, " ")));
      box.appendChild(p);
    });
    return box;
  }

  function slug(s) { return String(s).replace(/[^A-Za-z0-9_.-]+/g, "-"); }
  function opId(method, path, op) { return "op-" + slug(op.operationId || method + path); }
  function schemaId(name) { return "schema-" + slug(name); }

  // -- schemas ----------------------------------------------------------------------------------
  function refName(ref) { return ref.indexOf(REF_PREFIX) === 0 ? ref.slice(REF_PREFIX.length) : ref; }

  function schemaLink(name) {
    return el("a", { href: "#" + schemaId(name), class: "api-schema-link" }, [el("code", { text: name })]);
  }

  function joined(items, sep) {
    var frag = document.createDocumentFragment();
    items.forEach(function (item, i) {
      if (i) frag.appendChild(document.createTextNode(sep));
      frag.appendChild(item);
    });
    return frag;
  }

  // A one-line description of a schema's type, with links to named schemas.
  function typeOf(s) {
    var frag = document.createDocumentFragment();
    if (!s || typeof s !== "object") { frag.appendChild(document.createTextNode("any")); return frag; }
    if (s.$ref) { frag.appendChild(schemaLink(refName(s.$ref))); return frag; }
    var alts = s.oneOf || s.anyOf;
    if (alts) {
      frag.appendChild(joined(alts.map(typeOf), s.oneOf ? " | " : " or "));
      return frag;
    }
    var t = s.type;
    if (Array.isArray(t)) {
      frag.appendChild(joined(t.map(function (x) { return typeOf(Object.assign({}, s, { type: x })); }), " | "));
      return frag;
    }
    if (t === "array") {
      var items = s.prefixItems ? el("span", {}, ["[", joined(s.prefixItems.map(typeOf), ", "), "]"]) : typeOf(s.items);
      frag.appendChild(document.createTextNode("array of "));
      frag.appendChild(items);
      return frag;
    }
    if (t === "object" && s.additionalProperties && typeof s.additionalProperties === "object" && !s.properties) {
      frag.appendChild(document.createTextNode("object of "));
      frag.appendChild(typeOf(s.additionalProperties));
      return frag;
    }
    var label = t || (s.const !== undefined ? typeof s.const : "any");
    if (s.format) label += " (" + s.format + ")";
    frag.appendChild(el("span", { class: "api-type", text: label }));
    return frag;
  }

  function fmt(v) { return typeof v === "string" ? v : JSON.stringify(v); }

  // Constraints worth a reader's attention: allowed values, bounds, default, pattern.
  function constraints(s) {
    var out = [];
    if (!s || typeof s !== "object") return out;
    var inner = s;
    var alts = s.anyOf || s.oneOf;
    if (alts) inner = alts.filter(function (a) { return a.type !== "null"; })[0] || s;
    if (s.const !== undefined) out.push(["is", fmt(s.const)]);
    var en = inner.enum || (inner.items && inner.items.enum);
    if (en) out.push(["one of", en.filter(function (v) { return v !== null; }).map(fmt).join(", ")]);
    var lo = inner.minimum !== undefined ? inner.minimum : inner.items && inner.items.minimum;
    var hi = inner.maximum !== undefined ? inner.maximum : inner.items && inner.items.maximum;
    if (lo !== undefined && lo !== null) out.push(["min", fmt(lo)]);
    if (hi !== undefined && hi !== null) out.push(["max", fmt(hi)]);
    if (inner.minLength !== undefined && inner.minLength > 1) out.push(["min length", fmt(inner.minLength)]);
    if (inner.maxLength !== undefined) out.push(["max length", fmt(inner.maxLength)]);
    if (s.default !== undefined && s.default !== "") out.push(["default", fmt(s.default)]);
    if (inner.pattern && !inner.format) out.push(["pattern", inner.pattern]);
    return out;
  }

  function constraintList(s) {
    var items = constraints(s);
    if (!items.length) return null;
    return el("ul", { class: "api-constraints" }, items.map(function (c) {
      return el("li", {}, [el("span", { class: "muted", text: c[0] + " " }), el("code", { text: c[1] })]);
    }));
  }

  function propertiesTable(s, caption) {
    var props = s.properties || {};
    var names = Object.keys(props);
    if (!names.length) return null;
    var required = s.required || [];
    var rows = names.map(function (name) {
      var p = props[name];
      return el("tr", {}, [
        el("th", { scope: "row" }, [el("code", { text: name }),
          required.indexOf(name) >= 0 ? el("span", { class: "req", text: "required" }) : null]),
        el("td", {}, [typeOf(p)]),
        el("td", {}, [p.description ? inline(p.description) : null, constraintList(p)]),
      ]);
    });
    return el("div", { class: "api-table-wrap" }, [el("table", { class: "api-table" }, [
      el("caption", { class: "visually-hidden", text: caption }),
      el("thead", {}, [el("tr", {}, [el("th", { scope: "col", text: "Field" }), el("th", { scope: "col", text: "Type" }),
                                     el("th", { scope: "col", text: "Description" })])]),
      el("tbody", {}, rows),
    ])]);
  }

  // A schema used in an operation: a link for a named schema, a list of links for a oneOf, or the
  // properties of an inline object.
  function schemaBlock(s, caption) {
    if (!s) return null;
    if (s.$ref) return el("p", {}, ["Schema: ", schemaLink(refName(s.$ref))]);
    if (s.oneOf) {
      var by = s.discriminator ? " (chosen by " : "";
      return el("div", {}, [
        el("p", {}, ["One of", by ? by : "", by ? el("code", { text: s.discriminator.propertyName }) : null, by ? "):" : ":"]),
        el("ul", { class: "api-variants" }, s.oneOf.map(function (v) { return el("li", {}, [typeOf(v)]); })),
      ]);
    }
    if (s.properties) return propertiesTable(s, caption);
    return el("p", {}, ["Schema: ", typeOf(s)]);
  }

  // -- operations -------------------------------------------------------------------------------
  function methodBadge(method) {
    return el("span", { class: "api-method api-method-" + method, text: method.toUpperCase() });
  }

  function parametersSection(params) {
    if (!params || !params.length) return null;
    var rows = params.map(function (p) {
      return el("tr", {}, [
        el("th", { scope: "row" }, [el("code", { text: p.name }), p.required ? el("span", { class: "req", text: "required" }) : null]),
        el("td", { text: p.in }),
        el("td", {}, [typeOf(p.schema)]),
        el("td", {}, [p.description ? inline(p.description) : null, constraintList(p.schema)]),
      ]);
    });
    return el("section", { class: "api-block" }, [
      el("h4", { text: "Parameters" }),
      el("div", { class: "api-table-wrap" }, [el("table", { class: "api-table" }, [
        el("caption", { class: "visually-hidden", text: "Parameters" }),
        el("thead", {}, [el("tr", {}, ["Name", "In", "Type", "Description"].map(function (h) {
          return el("th", { scope: "col", text: h });
        }))]),
        el("tbody", {}, rows),
      ])]),
    ]);
  }

  function bodySection(body) {
    if (!body || !body.content) return null;
    var parts = [el("h4", {}, ["Request body", body.required ? el("span", { class: "req", text: "required" }) :
                                                               el("span", { class: "opt", text: "optional" })])];
    if (body.description) parts.push(prose(body.description));
    Object.keys(body.content).forEach(function (type) {
      parts.push(el("div", { class: "api-media" }, [el("p", { class: "api-media-type" }, [el("code", { text: type })]),
                                                   schemaBlock(body.content[type].schema, "Request body fields")]));
    });
    return el("section", { class: "api-block" }, parts);
  }

  function responsesSection(responses) {
    var codes = Object.keys(responses || {});
    if (!codes.length) return null;
    var items = codes.map(function (code) {
      var r = responses[code];
      var cls = "api-status api-status-" + String(code).charAt(0) + "xx";
      var content = r.content || {};
      var types = Object.keys(content);
      var detail = [];
      types.forEach(function (type) {
        var s = content[type].schema || {};
        var binary = s.type === "string" && s.format === "binary";
        detail.push(el("span", { class: "api-media-line" }, [el("code", { text: type }),
          binary ? " (file)" : null, !binary && s ? el("span", {}, [" → ", typeOf(s)]) : null]));
      });
      var headers = Object.keys(r.headers || {});
      if (headers.length) {
        detail.push(el("span", { class: "api-media-line muted" }, ["Headers: ",
          joined(headers.map(function (h) { return el("code", { text: h }); }), ", ")]));
      }
      return el("li", { class: "api-response" }, [
        el("span", { class: cls, text: code }),
        el("div", {}, [el("p", {}, [inline(r.description || "")])].concat(detail)),
      ]);
    });
    return el("section", { class: "api-block" }, [el("h4", { text: "Responses" }), el("ul", { class: "api-responses" }, items)]);
  }

  function operationCard(method, path, op) {
    var id = opId(method, path, op);
    var summary = el("summary", {}, [
      methodBadge(method), " ", el("code", { class: "api-path", text: path }), " ",
      el("span", { class: "api-summary", text: op.summary || "" }),
    ]);
    var body = [summary];
    if (op.description && op.description !== op.summary) body.push(prose(op.description));
    if (op["x-undocumented"]) body.push(el("p", { class: "notice", text: "This operation has no documentation entry yet." }));
    body.push(parametersSection(op.parameters), bodySection(op.requestBody), responsesSection(op.responses));
    return el("details", { class: "api-op", id: id }, body);
  }

  function operationsByTag() {
    var tags = (spec.tags || []).map(function (t) { return t.name; });
    var groups = {};
    Object.keys(spec.paths || {}).forEach(function (path) {
      METHODS.forEach(function (method) {
        var op = spec.paths[path][method];
        if (!op) return;
        var tag = (op.tags && op.tags[0]) || "other";
        if (tags.indexOf(tag) < 0) tags.push(tag);
        (groups[tag] = groups[tag] || []).push([method, path, op]);
      });
    });
    return tags.filter(function (t) { return groups[t]; }).map(function (t) { return [t, groups[t]]; });
  }

  function tagDescription(name) {
    var t = (spec.tags || []).filter(function (x) { return x.name === name; })[0];
    return t && t.description;
  }

  // -- the page ---------------------------------------------------------------------------------
  function render() {
    var groups = operationsByTag();
    var frag = document.createDocumentFragment();
    if (spec.info && spec.info.description) frag.appendChild(prose(spec.info.description, "api-prose lead"));

    var index = el("nav", { class: "panel api-index", "aria-label": "Operations" }, [el("h2", { text: "Operations" })]);
    groups.forEach(function (g) {
      index.appendChild(el("h3", { class: "api-index-tag", text: g[0] }));
      index.appendChild(el("ul", {}, g[1].map(function (o) {
        return el("li", {}, [el("a", { href: "#" + opId(o[0], o[1], o[2]) }, [methodBadge(o[0]), " ",
          el("code", { text: o[1] })]), " ", el("span", { class: "muted", text: o[2].summary || "" })]);
      })));
    });
    var schemaNames = Object.keys((spec.components && spec.components.schemas) || {});
    index.appendChild(el("p", {}, [el("a", { href: "#schemas", text: "Schemas (" + schemaNames.length + ")" })]));
    frag.appendChild(index);

    groups.forEach(function (g) {
      var section = el("section", { class: "api-tag", "aria-labelledby": "tag-" + slug(g[0]) }, [
        el("h2", { id: "tag-" + slug(g[0]), text: g[0] }),
        tagDescription(g[0]) ? el("p", { class: "muted" }, [inline(tagDescription(g[0]))]) : null,
      ]);
      g[1].forEach(function (o) { section.appendChild(operationCard(o[0], o[1], o[2])); });
      frag.appendChild(section);
    });

    var schemas = el("section", { class: "api-tag", "aria-labelledby": "schemas" }, [el("h2", { id: "schemas", text: "Schemas" })]);
    schemaNames.forEach(function (name) {
      var s = spec.components.schemas[name];
      var parts = [el("summary", {}, [el("code", { class: "api-schema-name", text: name }),
        s.title && s.title !== name ? el("span", { class: "api-summary", text: " " + s.title }) : null])];
      if (s.description) parts.push(prose(s.description));
      parts.push(s.properties ? propertiesTable(s, name + " fields") : schemaBlock(s, name));
      if (s.additionalProperties === false) parts.push(el("p", { class: "muted small", text: "No other fields." }));
      schemas.appendChild(el("details", { class: "api-op api-schema", id: schemaId(name) }, parts));
    });
    frag.appendChild(schemas);

    root.textContent = "";
    root.appendChild(frag);
    openTarget();
  }

  // Following a link to an operation or schema opens it (and the browser scrolls to it).
  function openTarget() {
    var id = decodeURIComponent(location.hash.slice(1));
    if (!id) return;
    var target = document.getElementById(id);
    if (target && target.tagName === "DETAILS") {
      target.open = true;
      target.scrollIntoView();
    }
  }

  window.addEventListener("hashchange", openTarget);

  fetch(root.getAttribute("data-spec-url"), { headers: { Accept: "application/json" }, credentials: "same-origin" })
    .then(function (r) {
      if (!r.ok) throw new Error("the document answered HTTP " + r.status);
      return r.json();
    })
    .then(function (doc) {
      spec = doc;
      render();
    })
    .catch(function (err) {
      var status = document.getElementById("api-docs-status");
      if (status) {
        status.textContent = "The API description could not be loaded (" + err.message + "). ";
        status.className = "alert alert-error";
      }
    });
})();
