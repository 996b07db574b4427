// Command hcl checks deploy/terraform/ without terraform (which this project cannot download):
//
//	hcl fmt [-w] FILE...   exit 1 naming each file that hclwrite.Format would change (-w: rewrite)
//	hcl dump [-var-file F] DIR   the module's resources, evaluated, as JSON on stdout
//
// fmt is the formatter `terraform fmt` and hclfmt are built on (hclwrite.Format); terraform fmt
// also rewrites a few pre-0.12 idioms this module does not use.
//
// dump evaluates the module as Terraform would plan it, with the variables of -var-file (JSON)
// over their defaults: locals, for_each (each.key, each.value) and the functions the module
// calls. Other resources' and data sources' attributes are unknown before apply, so each stands
// for itself as a string, "${aws_sqs_queue.queue.arn}". The output,
//
//	{"resources": {"aws_sqs_queue.queue": {"name": …}, "aws_cloudwatch_event_rule.rule[\"spot-interruption\"]": {…}}}
//
// is what tests/iac/test_iac.py compares with the CloudFormation template. It knows only what
// this module uses: no count, modules, dynamic blocks or provider schemas.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/hcl/v2/hclwrite"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
	ctyjson "github.com/zclconf/go-cty/cty/json"
)

func main() {
	if len(os.Args) < 2 {
		fail("usage: hcl fmt [-w] FILE... | hcl dump [-var-file F] DIR")
	}
	switch os.Args[1] {
	case "fmt":
		fs := flag.NewFlagSet("fmt", flag.ExitOnError)
		write := fs.Bool("w", false, "rewrite the files")
		_ = fs.Parse(os.Args[2:])
		os.Exit(fmtFiles(fs.Args(), *write))
	case "dump":
		fs := flag.NewFlagSet("dump", flag.ExitOnError)
		varFile := fs.String("var-file", "", "JSON object of variable values")
		_ = fs.Parse(os.Args[2:])
		if fs.NArg() != 1 {
			fail("dump: one module directory")
		}
		out, err := dump(fs.Arg(0), *varFile)
		if err != nil {
			fail(err.Error())
		}
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(out)
	default:
		fail("unknown command " + os.Args[1])
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "hcl:", msg)
	os.Exit(2)
}

func fmtFiles(files []string, write bool) int {
	status := 0
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			fail(err.Error())
		}
		if _, diags := hclsyntax.ParseConfig(src, f, hcl.InitialPos); diags.HasErrors() {
			fail(diags.Error())
		}
		formatted := hclwrite.Format(src)
		if string(formatted) == string(src) {
			continue
		}
		if write {
			if err := os.WriteFile(f, formatted, 0o644); err != nil {
				fail(err.Error())
			}
			fmt.Println("formatted", f)
			continue
		}
		fmt.Println("not formatted (scripts/hcl fmt -w fixes it):", f)
		status = 1
	}
	return status
}

// unknownAttrs are the attributes a reference to another resource may name.
var unknownAttrs = []string{"arn", "id", "name", "url", "account_id", "partition"}

type block struct {
	kind, typ, name string
	body            *hclsyntax.Body
}

func dump(dir, varFile string) (map[string]any, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.tf"))
	if err != nil {
		return nil, err
	}
	sort.Strings(paths)
	var blocks []block
	for _, p := range paths {
		src, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		f, diags := hclsyntax.ParseConfig(src, p, hcl.InitialPos)
		if diags.HasErrors() {
			return nil, diags
		}
		for _, b := range f.Body.(*hclsyntax.Body).Blocks {
			bl := block{kind: b.Type, body: b.Body}
			if len(b.Labels) > 0 {
				bl.typ = b.Labels[0]
			}
			if len(b.Labels) > 1 {
				bl.name = b.Labels[1]
			}
			blocks = append(blocks, bl)
		}
	}

	given := map[string]cty.Value{}
	if varFile != "" {
		src, err := os.ReadFile(varFile)
		if err != nil {
			return nil, err
		}
		ty, err := ctyjson.ImpliedType(src)
		if err != nil {
			return nil, err
		}
		v, err := ctyjson.Unmarshal(src, ty)
		if err != nil {
			return nil, err
		}
		given = v.AsValueMap()
	}
	vars := map[string]cty.Value{}
	for _, b := range blocks {
		if b.kind != "variable" {
			continue
		}
		if v, ok := given[b.typ]; ok {
			vars[b.typ] = v
			continue
		}
		attr, ok := b.body.Attributes["default"]
		if !ok {
			return nil, fmt.Errorf("variable %s has no default and no value in -var-file", b.typ)
		}
		v, diags := attr.Expr.Value(nil)
		if diags.HasErrors() {
			return nil, diags
		}
		vars[b.typ] = v
	}

	ctx := &hcl.EvalContext{
		Variables: map[string]cty.Value{"var": cty.ObjectVal(vars), "path": cty.ObjectVal(map[string]cty.Value{"module": cty.StringVal(dir)})},
		Functions: functions(),
	}
	// Locals may refer to one another: evaluate until none is left.
	locals := map[string]hcl.Expression{}
	for _, b := range blocks {
		if b.kind == "locals" {
			for name, attr := range b.body.Attributes {
				locals[name] = attr.Expr
			}
		}
	}
	done := map[string]cty.Value{}
	for len(locals) > 0 {
		progress := false
		for name, expr := range locals {
			ctx.Variables["local"] = cty.ObjectVal(done)
			v, diags := expr.Value(ctx)
			if diags.HasErrors() {
				continue
			}
			done[name] = v
			delete(locals, name)
			progress = true
		}
		if !progress {
			names := make([]string, 0, len(locals))
			for n := range locals {
				names = append(names, n)
			}
			return nil, fmt.Errorf("locals that never evaluate: %v", names)
		}
	}
	ctx.Variables["local"] = cty.ObjectVal(done)

	// Resources and data sources: their attributes are unknown before apply, so each stands for
	// itself. A for_each resource is a map over the keys its for_each gives (from variables and
	// locals only, as Terraform requires them known at plan).
	resources := map[string]map[string]cty.Value{}
	data := map[string]map[string]cty.Value{}
	for _, b := range blocks {
		into, prefix := resources, b.typ+"."+b.name
		switch b.kind {
		case "resource":
		case "data":
			into, prefix = data, "data."+prefix
		default:
			continue
		}
		if into[b.typ] == nil {
			into[b.typ] = map[string]cty.Value{}
		}
		forEach, ok := b.body.Attributes["for_each"]
		if !ok {
			into[b.typ][b.name] = symbol(prefix)
			continue
		}
		coll, diags := forEach.Expr.Value(ctx)
		if diags.HasErrors() {
			return nil, fmt.Errorf("%s for_each: %s", prefix, diags.Error())
		}
		keyed := map[string]cty.Value{}
		for _, k := range keysOf(coll) {
			keyed[k] = symbol(fmt.Sprintf("%s[%q]", prefix, k))
		}
		into[b.typ][b.name] = cty.ObjectVal(keyed)
	}
	for typ, names := range resources {
		ctx.Variables[typ] = cty.ObjectVal(names)
	}
	dataVals := map[string]cty.Value{}
	for typ, names := range data {
		dataVals[typ] = cty.ObjectVal(names)
	}
	ctx.Variables["data"] = cty.ObjectVal(dataVals)

	out := map[string]any{}
	for _, b := range blocks {
		if b.kind != "resource" {
			continue
		}
		id := b.typ + "." + b.name
		forEach, ok := b.body.Attributes["for_each"]
		if !ok {
			v, err := evalBody(b.body, ctx)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", id, err)
			}
			out[id] = v
			continue
		}
		coll, diags := forEach.Expr.Value(ctx)
		if diags.HasErrors() {
			return nil, fmt.Errorf("%s for_each: %s", id, diags.Error())
		}
		for it := coll.ElementIterator(); it.Next(); {
			k, v := it.Element()
			if coll.Type().IsSetType() {
				k = v
			}
			child := ctx.NewChild()
			child.Variables = map[string]cty.Value{"each": cty.ObjectVal(map[string]cty.Value{"key": k, "value": v})}
			body, err := evalBody(b.body, child)
			if err != nil {
				return nil, fmt.Errorf("%s[%q]: %w", id, k.AsString(), err)
			}
			out[fmt.Sprintf("%s[%q]", id, k.AsString())] = body
		}
	}
	return map[string]any{"resources": out}, nil
}

// symbol: an object whose attributes are their own references, "${REF.arn}" and so on.
func symbol(ref string) cty.Value {
	m := map[string]cty.Value{}
	for _, a := range unknownAttrs {
		m[a] = cty.StringVal("${" + ref + "." + a + "}")
	}
	return cty.ObjectVal(m)
}

// keysOf: the instance keys of a for_each value (a map's keys, a set's strings).
func keysOf(coll cty.Value) []string {
	var keys []string
	for it := coll.ElementIterator(); it.Next(); {
		k, v := it.Element()
		if coll.Type().IsSetType() {
			k = v
		}
		keys = append(keys, k.AsString())
	}
	return keys
}

func evalBody(body *hclsyntax.Body, ctx *hcl.EvalContext) (map[string]any, error) {
	out := map[string]any{}
	for name, attr := range body.Attributes {
		if name == "for_each" {
			continue
		}
		v, diags := attr.Expr.Value(ctx)
		if diags.HasErrors() {
			return nil, diags
		}
		j, err := toJSON(v)
		if err != nil {
			return nil, err
		}
		out[name] = j
	}
	for _, b := range body.Blocks {
		child, err := evalBody(b.Body, ctx)
		if err != nil {
			return nil, err
		}
		list, _ := out[b.Type].([]any)
		out[b.Type] = append(list, child)
	}
	return out, nil
}

func toJSON(v cty.Value) (any, error) {
	b, err := ctyjson.Marshal(v, v.Type())
	if err != nil {
		return nil, err
	}
	var out any
	err = json.Unmarshal(b, &out)
	return out, err
}

func functions() map[string]function.Function {
	toset := function.New(&function.Spec{
		Params: []function.Parameter{{Name: "v", Type: cty.DynamicPseudoType}},
		Type: func(args []cty.Value) (cty.Type, error) {
			ety := cty.DynamicPseudoType
			if t := args[0].Type(); t.IsListType() || t.IsSetType() {
				ety = t.ElementType()
			} else if t.IsTupleType() {
				if u, _ := convert.UnifyUnsafe(t.TupleElementTypes()); u != cty.NilType {
					ety = u
				}
			}
			return cty.Set(ety), nil
		},
		Impl: func(args []cty.Value, retType cty.Type) (cty.Value, error) {
			return convert.Convert(args[0], retType)
		},
	})
	// The functions the module calls (validation blocks are not evaluated).
	return map[string]function.Function{
		"jsonencode": stdlib.JSONEncodeFunc,
		"merge":      stdlib.MergeFunc,
		"keys":       stdlib.KeysFunc,
		"values":     stdlib.ValuesFunc,
		"concat":     stdlib.ConcatFunc,
		"length":     stdlib.LengthFunc,
		"format":     stdlib.FormatFunc,
		"regex":      stdlib.RegexFunc,
		"toset":      toset,
		"lower":      stdlib.LowerFunc,
		"join":       stdlib.JoinFunc,
	}
}
