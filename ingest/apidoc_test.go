package ingest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
)

// apiDocPath is the API reference generated from openapi.json, which the
// README links: a reader of the repository sees the contract without a
// running edge or an OpenAPI viewer.
const apiDocPath = "../docs/api.md"

// TestAPIReferenceUpToDate fails when docs/api.md is not what openapi.json
// renders to, so that the two cannot drift apart. Regenerate with
// `make api-doc` (ORDERPIPE_UPDATE_API_DOC=1 go test -run TestAPIReferenceUpToDate ./ingest/).
func TestAPIReferenceUpToDate(t *testing.T) {
	var spec map[string]any
	if err := json.Unmarshal([]byte(openAPIDocument), &spec); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	got := renderAPIDoc(spec)
	if os.Getenv("ORDERPIPE_UPDATE_API_DOC") == "1" {
		if err := os.WriteFile(apiDocPath, got, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s (%d bytes)", filepath.Clean(apiDocPath), len(got))
		return
	}
	want, err := os.ReadFile(apiDocPath)
	if err != nil {
		t.Fatalf("%v: run `make api-doc`", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is not what ingest/openapi.json renders to: run `make api-doc` and commit it", apiDocPath)
	}
}

// apiDoc renders an OpenAPI document as Markdown. It knows the shapes
// openapi.json uses (local $refs, allOf of Problem plus an enum of types),
// not all of OpenAPI.
type apiDoc struct {
	spec map[string]any
	b    bytes.Buffer
}

func renderAPIDoc(spec map[string]any) []byte {
	d := &apiDoc{spec: spec}
	info := obj(spec["info"])
	d.printf("<!-- Generated from ingest/openapi.json by `make api-doc`; do not edit. -->\n")
	d.printf("# %s: API reference (version %s)\n\n", str(info["title"]), str(info["version"]))
	d.printf("%s\n\n%s\n\n", str(info["summary"]), str(info["description"]))
	d.printf("The machine-readable contract is `GET /openapi.json` on every edge (OpenAPI %s).\n\n", str(spec["openapi"]))

	paths := obj(spec["paths"])
	d.printf("## Operations\n\n| method | path | summary | scopes |\n|---|---|---|---|\n")
	for _, p := range sortedKeys(paths) {
		for _, m := range methods(obj(paths[p])) {
			op := obj(obj(paths[p])[m])
			d.printf("| %s | [`%s`](#%s) | %s | %s |\n", strings.ToUpper(m), p, anchor(strings.ToUpper(m)+" "+p), cell(str(op["summary"])), scopes(op))
		}
	}
	d.printf("\n")
	for _, p := range sortedKeys(paths) {
		for _, m := range methods(obj(paths[p])) {
			d.operation(strings.ToUpper(m), p, obj(obj(paths[p])[m]))
		}
	}

	d.printf("## Problem types\n\nEvery error is `application/problem+json`; clients switch on `type`.\n\n")
	schemas := obj(obj(spec["components"])["schemas"])
	for _, ty := range list(obj(schemas["ProblemType"])["enum"]) {
		d.printf("- `%s`\n", str(ty))
	}
	d.printf("\n## Schemas\n\n")
	for _, name := range sortedKeys(schemas) {
		d.schema(name, obj(schemas[name]))
	}
	return d.b.Bytes()
}

func (d *apiDoc) printf(format string, args ...any) { fmt.Fprintf(&d.b, format, args...) }

func (d *apiDoc) operation(method, path string, op map[string]any) {
	d.printf("### %s %s\n\n", method, path)
	d.printf("**%s.** %s\n\n", str(op["summary"]), str(op["description"]))
	if s := scopes(op); s != "" {
		d.printf("Scopes (any one): %s.\n\n", s)
	}
	if params := list(op["parameters"]); len(params) > 0 {
		d.printf("| parameter | in | required | schema | description |\n|---|---|---|---|---|\n")
		for _, p := range params {
			pm := d.resolve(obj(p))
			d.printf("| `%s` | %s | %v | %s | %s |\n", str(pm["name"]), str(pm["in"]), pm["required"] == true, d.typeOf(obj(pm["schema"])), cell(str(pm["description"])))
		}
		d.printf("\n")
	}
	if body := obj(op["requestBody"]); len(body) > 0 {
		d.printf("Request body: %s\n\n", cell(str(body["description"])))
		content := obj(body["content"])
		for _, ct := range sortedKeys(content) {
			d.printf("- `%s`: %s\n", ct, d.typeOf(obj(obj(content[ct])["schema"])))
		}
		d.printf("\n")
	}
	responses := obj(op["responses"])
	d.printf("| status | meaning | body |\n|---|---|---|\n")
	for _, code := range sortedKeys(responses) {
		r := d.resolve(obj(responses[code]))
		var bodies []string
		content := obj(r["content"])
		for _, ct := range sortedKeys(content) {
			b := "`" + ct + "`"
			if ty := d.problemTypes(obj(obj(content[ct])["schema"])); len(ty) > 0 {
				b += " " + strings.Join(ty, ", ")
			} else if s := d.typeOf(obj(obj(content[ct])["schema"])); s != "" {
				b += " " + s
			}
			bodies = append(bodies, b)
		}
		d.printf("| %s | %s | %s |\n", code, cell(str(r["description"])), strings.Join(bodies, "; "))
	}
	d.printf("\n")
}

func (d *apiDoc) schema(name string, s map[string]any) {
	d.printf("### %s\n\n", name)
	if desc := str(s["description"]); desc != "" {
		d.printf("%s\n\n", desc)
	}
	props := obj(s["properties"])
	if len(props) == 0 {
		d.printf("Type: %s%s.\n\n", d.typeOf(s), constraints(s))
		return
	}
	required := list(s["required"])
	d.printf("| field | type | required | description |\n|---|---|---|---|\n")
	for _, p := range sortedKeys(props) {
		ps := obj(props[p])
		d.printf("| `%s` | %s%s | %v | %s |\n", p, d.typeOf(ps), constraints(ps), slices.Contains(required, any(p)), cell(str(ps["description"])))
	}
	d.printf("\n")
}

// resolve follows a local $ref.
func (d *apiDoc) resolve(m map[string]any) map[string]any {
	ref := str(m["$ref"])
	if !strings.HasPrefix(ref, "#/") {
		return m
	}
	var cur any = d.spec
	for _, part := range strings.Split(ref[2:], "/") {
		cur = obj(cur)[part]
	}
	return obj(cur)
}

// typeOf names a schema: a link to a component, or its type.
func (d *apiDoc) typeOf(s map[string]any) string {
	if ref := str(s["$ref"]); ref != "" {
		name := ref[strings.LastIndex(ref, "/")+1:]
		return "[" + name + "](#" + anchor(name) + ")"
	}
	if all := list(s["allOf"]); len(all) > 0 {
		return d.typeOf(obj(all[0]))
	}
	switch t := s["type"].(type) {
	case string:
		if t == "array" {
			return "array of " + d.typeOf(obj(s["items"]))
		}
		return t
	case []any:
		var names []string
		for _, n := range t {
			names = append(names, str(n))
		}
		return strings.Join(names, " or ")
	}
	return ""
}

// problemTypes lists the problem types a Problem schema narrows to.
func (d *apiDoc) problemTypes(s map[string]any) []string {
	var out []string
	for _, part := range list(s["allOf"]) {
		for _, ty := range list(obj(obj(obj(part)["properties"])["type"])["enum"]) {
			out = append(out, "`"+strings.TrimPrefix(str(ty), "https://orderpipe.dev/problems/")+"`")
		}
	}
	return out
}

// constraints are a schema's limits, as JSON Schema spells them.
func constraints(s map[string]any) string {
	var out []string
	for _, k := range []string{"minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems", "pattern", "format"} {
		if v, ok := s[k]; ok {
			out = append(out, fmt.Sprintf("%s %v", k, v))
		}
	}
	if e := list(s["enum"]); len(e) > 0 && len(e) <= 6 {
		var vs []string
		for _, v := range e {
			vs = append(vs, fmt.Sprint(v))
		}
		out = append(out, "one of "+strings.Join(vs, ", "))
	}
	if len(out) == 0 {
		return ""
	}
	return " (" + cell(strings.Join(out, "; ")) + ")"
}

func scopes(op map[string]any) string {
	var out []string
	for _, req := range list(op["security"]) {
		for _, ss := range obj(req) {
			for _, s := range list(ss) {
				out = append(out, "`"+str(s)+"`")
			}
		}
	}
	return strings.Join(out, ", ")
}

var httpMethods = []string{"get", "put", "post", "delete", "patch", "head", "options"}

func methods(item map[string]any) []string {
	var out []string
	for _, m := range httpMethods {
		if _, ok := item[m]; ok {
			out = append(out, m)
		}
	}
	return out
}

// anchor is GitHub's heading anchor of text.
func anchor(text string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(text) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteByte('-')
		}
	}
	return b.String()
}

// cell makes text fit in a Markdown table cell.
func cell(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	return strings.ReplaceAll(strings.TrimSpace(s), "\n", "<br>")
}

func obj(v any) map[string]any { m, _ := v.(map[string]any); return m }
func list(v any) []any         { l, _ := v.([]any); return l }
func str(v any) string         { s, _ := v.(string); return s }

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
