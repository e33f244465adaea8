// Command render renders a Helm chart the way `helm template` does, with the same template engine:
// Go text/template, the Sprig function library, and Helm's own functions and objects. It exists so that
// `npm test` checks charts/lunar on a machine without Helm (Helm itself is not packaged in Debian 12; its
// engine's parts are: golang-go, golang-github-masterminds-sprig-dev, golang-k8s-sigs-yaml-dev,
// golang-github-xeipuuv-gojsonschema-dev). Built in GOPATH mode (GO111MODULE=off, GOPATH=/usr/share/gocode).
//
//	render -chart DIR [-f values.yaml]... [-release NAME] [-namespace NS] [-api-version group/version/Kind]...
//	       [-kube-version v1.33.0]
//
// What it reproduces of Helm 3 (pkg/engine, pkg/chartutil):
//   - values: the chart's values.yaml, then each -f file coalesced over it in order (maps merge key by key,
//     other values replace, a null deletes the key), then validated against values.schema.json (JSON
//     Schema draft-07); a violation prints "<key path>: <problem>" for each and exits 2.
//   - objects: .Values, .Release (Name, Namespace, Service "Helm", IsInstall, IsUpgrade, Revision),
//     .Chart (Chart.yaml with Helm's capitalised field names), .Capabilities (KubeVersion, APIVersions.Has),
//     .Template (Name, BasePath).
//   - functions: Sprig's text functions without env/expandenv (Helm removes them), and include, tpl,
//     required, fail, toYaml, fromYaml, fromYamlArray, toJson, fromJson, lookup (always empty: no cluster).
//   - missing keys render as empty (Helm's non-strict mode), "<no value>" is removed from the output.
//   - files whose name starts with "_" are partials; NOTES.txt is rendered apart from the manifests.
//
// Output (stdout): JSON {"manifests":[{"source":"lunar/templates/x.yaml","object":{...}}...],"notes":"..."}:
// every YAML document of every rendered template, parsed (a document that is not valid YAML is an error
// naming its template), empty documents dropped.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/ioutil"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig"
	"github.com/xeipuuv/gojsonschema"
	"sigs.k8s.io/yaml"
)

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// apiVersions is .Capabilities.APIVersions: Has accepts "group/version" or "group/version/Kind".
type apiVersions []string

func (a apiVersions) Has(v string) bool {
	for _, x := range a {
		if x == v {
			return true
		}
	}
	return false
}

type kubeVersion struct {
	Version, Major, Minor, GitVersion string
}

func (k kubeVersion) String() string { return k.Version }

type capabilities struct {
	KubeVersion kubeVersion
	APIVersions apiVersions
}

type release struct {
	Name, Namespace, Service string
	IsInstall, IsUpgrade     bool
	Revision                 int
}

// Built-in API versions of a Kubernetes release (what `helm template` assumes without a cluster).
var builtinAPIVersions = []string{
	"v1", "apps/v1", "batch/v1", "policy/v1", "rbac.authorization.k8s.io/v1", "storage.k8s.io/v1",
	"networking.k8s.io/v1", "coordination.k8s.io/v1", "scheduling.k8s.io/v1", "apiextensions.k8s.io/v1",
	"admissionregistration.k8s.io/v1", "autoscaling/v2", "discovery.k8s.io/v1", "events.k8s.io/v1",
}

func readYAMLMap(file string) (map[string]interface{}, error) {
	b, err := ioutil.ReadFile(file)
	if err != nil {
		return nil, err
	}
	m := map[string]interface{}{}
	if err := yaml.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %v", file, err)
	}
	if m == nil {
		m = map[string]interface{}{}
	}
	return m, nil
}

// coalesce merges src over dst as Helm coalesces user values over chart defaults.
func coalesce(dst, src map[string]interface{}) map[string]interface{} {
	for k, v := range src {
		if v == nil {
			delete(dst, k)
			continue
		}
		sm, sIsMap := v.(map[string]interface{})
		dm, dIsMap := dst[k].(map[string]interface{})
		if sIsMap && dIsMap {
			dst[k] = coalesce(dm, sm)
		} else {
			dst[k] = v
		}
	}
	return dst
}

// validateValues checks values against values.schema.json; each problem names its key path.
func validateValues(chartDir string, values map[string]interface{}) error {
	schemaFile := filepath.Join(chartDir, "values.schema.json")
	schema, err := ioutil.ReadFile(schemaFile)
	if err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		return err
	}
	doc, err := json.Marshal(values)
	if err != nil {
		return err
	}
	res, err := gojsonschema.Validate(gojsonschema.NewBytesLoader(schema), gojsonschema.NewBytesLoader(doc))
	if err != nil {
		return fmt.Errorf("values.schema.json: %v", err)
	}
	if res.Valid() {
		return nil
	}
	var lines []string
	for _, e := range res.Errors() {
		field := e.Field()
		if e.Type() == "additional_property_not_allowed" {
			if p, ok := e.Details()["property"].(string); ok {
				if field == "(root)" {
					field = p
				} else {
					field = field + "." + p
				}
			}
		}
		lines = append(lines, fmt.Sprintf("- %s: %s", field, e.Description()))
	}
	sort.Strings(lines)
	return fmt.Errorf("values don't meet the specifications of the schema(s) in the following chart(s):\n%s:\n%s",
		path.Base(chartDir), strings.Join(lines, "\n"))
}

func toYAML(v interface{}) string {
	b, err := yaml.Marshal(v)
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(string(b), "\n")
}

func fromYAML(s string) map[string]interface{} {
	m := map[string]interface{}{}
	if err := yaml.Unmarshal([]byte(s), &m); err != nil {
		m["Error"] = err.Error()
	}
	return m
}

func fromYAMLArray(s string) []interface{} {
	var a []interface{}
	if err := yaml.Unmarshal([]byte(s), &a); err != nil {
		a = []interface{}{err.Error()}
	}
	return a
}

func toJSON(v interface{}) string {
	b, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	return string(b)
}

func fromJSON(s string) map[string]interface{} {
	m := map[string]interface{}{}
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		m["Error"] = err.Error()
	}
	return m
}

// chartObject maps Chart.yaml's keys to the field names templates use (.Chart.AppVersion, ...).
func chartObject(meta map[string]interface{}) map[string]interface{} {
	out := map[string]interface{}{}
	names := map[string]string{"apiVersion": "APIVersion", "appVersion": "AppVersion", "kubeVersion": "KubeVersion"}
	for k, v := range meta {
		name, ok := names[k]
		if !ok {
			name = strings.ToUpper(k[:1]) + k[1:]
		}
		out[name] = v
	}
	return out
}

type engine struct {
	tmpl *template.Template
}

func (e *engine) funcs() template.FuncMap {
	f := sprig.TxtFuncMap()
	delete(f, "env")
	delete(f, "expandenv")
	f["include"] = func(name string, data interface{}) (string, error) {
		var buf bytes.Buffer
		if err := e.tmpl.ExecuteTemplate(&buf, name, data); err != nil {
			return "", err
		}
		return buf.String(), nil
	}
	f["tpl"] = func(text string, data interface{}) (string, error) {
		t, err := e.tmpl.Clone()
		if err != nil {
			return "", err
		}
		t, err = t.New("tpl").Parse(text)
		if err != nil {
			return "", fmt.Errorf("tpl: %v", err)
		}
		var buf bytes.Buffer
		if err := t.Execute(&buf, data); err != nil {
			return "", fmt.Errorf("tpl: %v", err)
		}
		return strings.ReplaceAll(buf.String(), "<no value>", ""), nil
	}
	f["required"] = func(msg string, v interface{}) (interface{}, error) {
		if v == nil {
			return nil, errors.New(msg)
		}
		if s, ok := v.(string); ok && s == "" {
			return nil, errors.New(msg)
		}
		return v, nil
	}
	f["fail"] = func(msg string) (string, error) { return "", errors.New(msg) }
	f["toYaml"] = toYAML
	f["fromYaml"] = fromYAML
	f["fromYamlArray"] = fromYAMLArray
	f["toJson"] = toJSON
	f["fromJson"] = fromJSON
	f["lookup"] = func(apiVersion, kind, namespace, name string) (map[string]interface{}, error) {
		return map[string]interface{}{}, nil
	}
	return f
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

type manifest struct {
	Source string      `json:"source"`
	Object interface{} `json:"object"`
}

func run() error {
	var valueFiles, apis multiFlag
	chartDir := flag.String("chart", "", "chart directory")
	releaseName := flag.String("release", "lunar", "release name")
	namespace := flag.String("namespace", "lunar", "release namespace")
	kubeVer := flag.String("kube-version", "v1.33.0", "Kubernetes version for .Capabilities")
	flag.Var(&valueFiles, "f", "values file coalesced over the chart's values.yaml (repeatable)")
	flag.Var(&apis, "api-version", "extra API version for .Capabilities.APIVersions (repeatable)")
	flag.Parse()
	if *chartDir == "" {
		return errors.New("-chart DIR is required")
	}
	meta, err := readYAMLMap(filepath.Join(*chartDir, "Chart.yaml"))
	if err != nil {
		return err
	}
	chartName, _ := meta["name"].(string)
	values, err := readYAMLMap(filepath.Join(*chartDir, "values.yaml"))
	if err != nil {
		return err
	}
	for _, f := range valueFiles {
		over, err := readYAMLMap(f)
		if err != nil {
			return err
		}
		values = coalesce(values, over)
	}
	if err := validateValues(*chartDir, values); err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(2)
	}
	v := strings.TrimPrefix(*kubeVer, "v")
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return fmt.Errorf("-kube-version %s: expected vMAJOR.MINOR.PATCH", *kubeVer)
	}
	caps := capabilities{
		KubeVersion: kubeVersion{Version: "v" + v, Major: parts[0], Minor: parts[1], GitVersion: "v" + v},
		APIVersions: append(apiVersions(append([]string{}, builtinAPIVersions...)), apis...),
	}
	rel := release{Name: *releaseName, Namespace: *namespace, Service: "Helm", IsInstall: true, Revision: 1}

	e := &engine{}
	e.tmpl = template.New(chartName).Option("missingkey=zero")
	e.tmpl.Funcs(e.funcs())
	templatesDir := filepath.Join(*chartDir, "templates")
	var files []string
	err = filepath.Walk(templatesDir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if !info.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(files)
	names := make([]string, 0, len(files))
	for _, p := range files {
		rel, _ := filepath.Rel(*chartDir, p)
		name := path.Join(chartName, filepath.ToSlash(rel))
		b, err := ioutil.ReadFile(p)
		if err != nil {
			return err
		}
		if _, err := e.tmpl.New(name).Parse(string(b)); err != nil {
			return err
		}
		names = append(names, name)
	}

	out := struct {
		Manifests []manifest `json:"manifests"`
		Notes     string     `json:"notes"`
	}{Manifests: []manifest{}}
	for _, name := range names {
		base := path.Base(name)
		if strings.HasPrefix(base, "_") {
			continue
		}
		data := map[string]interface{}{
			"Values":       values,
			"Release":      rel,
			"Chart":        chartObject(meta),
			"Capabilities": caps,
			"Template":     map[string]interface{}{"Name": name, "BasePath": path.Join(chartName, "templates")},
		}
		var buf bytes.Buffer
		if err := e.tmpl.ExecuteTemplate(&buf, name, data); err != nil {
			return err
		}
		text := strings.ReplaceAll(buf.String(), "<no value>", "")
		if base == "NOTES.txt" {
			out.Notes = text
			continue
		}
		for i, doc := range docSeparator.Split(text, -1) {
			if strings.TrimSpace(doc) == "" {
				continue
			}
			var obj interface{}
			if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
				return fmt.Errorf("%s: document %d is not valid YAML: %v\n%s", name, i, err, doc)
			}
			if obj == nil {
				continue
			}
			out.Manifests = append(out.Manifests, manifest{Source: name, Object: obj})
		}
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", " ")
	return enc.Encode(out)
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
}
