package flyapitest

// A deliberately small GraphQL executor: enough of the language to read the
// documents a Fly client sends (operations, variables, arguments, aliases,
// fragments, inline fragments, @skip/@include) and to answer with exactly the
// fields that were selected. It is not a validator for the full spec.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// ---- lexer ----

type tokKind int

const (
	tEOF tokKind = iota
	tPunct
	tName
	tInt
	tFloat
	tString
)

type token struct {
	kind tokKind
	val  string
	pos  int
}

type lexer struct {
	src string
	pos int
}

func (l *lexer) next() (token, error) {
	// skip ignored tokens: whitespace, commas, comments, BOM
	for l.pos < len(l.src) {
		c := l.src[l.pos]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == ',':
			l.pos++
		case c == '#':
			for l.pos < len(l.src) && l.src[l.pos] != '\n' && l.src[l.pos] != '\r' {
				l.pos++
			}
		case strings.HasPrefix(l.src[l.pos:], "\uFEFF"):
			l.pos += len("\uFEFF")
		default:
			goto tok
		}
	}
	return token{kind: tEOF, pos: l.pos}, nil
tok:
	start := l.pos
	c := l.src[l.pos]
	switch {
	case strings.IndexByte("!$&():=@[]{}|", c) >= 0:
		l.pos++
		return token{kind: tPunct, val: string(c), pos: start}, nil
	case c == '.':
		if strings.HasPrefix(l.src[l.pos:], "...") {
			l.pos += 3
			return token{kind: tPunct, val: "...", pos: start}, nil
		}
		return token{}, fmt.Errorf("unexpected '.' at %d", start)
	case c == '_' || isLetter(c):
		for l.pos < len(l.src) && (l.src[l.pos] == '_' || isLetter(l.src[l.pos]) || isDigit(l.src[l.pos])) {
			l.pos++
		}
		return token{kind: tName, val: l.src[start:l.pos], pos: start}, nil
	case c == '-' || isDigit(c):
		l.pos++
		float := false
		for l.pos < len(l.src) {
			d := l.src[l.pos]
			if isDigit(d) {
				l.pos++
			} else if d == '.' || d == 'e' || d == 'E' || ((d == '+' || d == '-') && (l.src[l.pos-1] == 'e' || l.src[l.pos-1] == 'E')) {
				float = true
				l.pos++
			} else {
				break
			}
		}
		if float {
			return token{kind: tFloat, val: l.src[start:l.pos], pos: start}, nil
		}
		return token{kind: tInt, val: l.src[start:l.pos], pos: start}, nil
	case c == '"':
		if strings.HasPrefix(l.src[l.pos:], `"""`) {
			end := strings.Index(l.src[l.pos+3:], `"""`)
			for end >= 0 && l.src[l.pos+3+end-1] == '\\' { // escaped \"""
				n := strings.Index(l.src[l.pos+3+end+3:], `"""`)
				if n < 0 {
					end = -1
					break
				}
				end += 3 + n
			}
			if end < 0 {
				return token{}, fmt.Errorf("unterminated block string at %d", start)
			}
			raw := l.src[l.pos+3 : l.pos+3+end]
			l.pos += 3 + end + 3
			return token{kind: tString, val: blockString(strings.ReplaceAll(raw, `\"""`, `"""`)), pos: start}, nil
		}
		l.pos++
		var b strings.Builder
		for {
			if l.pos >= len(l.src) {
				return token{}, fmt.Errorf("unterminated string at %d", start)
			}
			d := l.src[l.pos]
			switch d {
			case '"':
				l.pos++
				return token{kind: tString, val: b.String(), pos: start}, nil
			case '\n', '\r':
				return token{}, fmt.Errorf("unterminated string at %d", start)
			case '\\':
				if l.pos+1 >= len(l.src) {
					return token{}, fmt.Errorf("bad escape at %d", l.pos)
				}
				e := l.src[l.pos+1]
				l.pos += 2
				switch e {
				case '"', '\\', '/':
					b.WriteByte(e)
				case 'b':
					b.WriteByte('\b')
				case 'f':
					b.WriteByte('\f')
				case 'n':
					b.WriteByte('\n')
				case 'r':
					b.WriteByte('\r')
				case 't':
					b.WriteByte('\t')
				case 'u':
					if l.pos+4 > len(l.src) {
						return token{}, fmt.Errorf("bad unicode escape at %d", l.pos)
					}
					r, err := strconv.ParseUint(l.src[l.pos:l.pos+4], 16, 32)
					if err != nil {
						return token{}, fmt.Errorf("bad unicode escape at %d", l.pos)
					}
					l.pos += 4
					b.WriteRune(rune(r))
				default:
					return token{}, fmt.Errorf("bad escape at %d", l.pos-2)
				}
			default:
				r, size := utf8.DecodeRuneInString(l.src[l.pos:])
				b.WriteRune(r)
				l.pos += size
			}
		}
	}
	return token{}, fmt.Errorf("unexpected character %q at %d", c, start)
}

func isLetter(c byte) bool { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') }
func isDigit(c byte) bool  { return c >= '0' && c <= '9' }

func blockString(raw string) string {
	lines := strings.Split(strings.ReplaceAll(raw, "\r\n", "\n"), "\n")
	for len(lines) > 0 && strings.TrimSpace(lines[0]) == "" {
		lines = lines[1:]
	}
	for len(lines) > 0 && strings.TrimSpace(lines[len(lines)-1]) == "" {
		lines = lines[:len(lines)-1]
	}
	return strings.Join(lines, "\n")
}

// ---- AST ----

type gqlValue struct {
	kind   string // "var", "int", "float", "string", "bool", "null", "enum", "list", "object"
	s      string
	list   []gqlValue
	fields []gqlObjField
}

type gqlObjField struct {
	name string
	val  gqlValue
}

type gqlArg struct {
	name string
	val  gqlValue
}

type gqlDirective struct {
	name string
	args []gqlArg
}

type gqlSelection struct {
	// field
	alias, name string
	args        []gqlArg
	directives  []gqlDirective
	sub         []gqlSelection
	// fragment spread / inline fragment
	spread     string // fragment name for "...Name"
	inline     bool
	typeCond   string
	isFragment bool
}

type gqlVarDef struct {
	name string
	def  *gqlValue
}

type gqlOperation struct {
	typ  string // query | mutation | subscription
	name string
	vars []gqlVarDef
	sel  []gqlSelection
}

type gqlDocument struct {
	ops       []*gqlOperation
	fragments map[string]*gqlFragment
}

type gqlFragment struct {
	typeCond string
	sel      []gqlSelection
}

// ---- parser ----

type parser struct {
	lx    lexer
	tok   token
	depth int
}

const maxParseDepth = 64

func parseDocument(src string) (doc *gqlDocument, err error) {
	p := &parser{lx: lexer{src: src}}
	if err := p.advance(); err != nil {
		return nil, err
	}
	doc = &gqlDocument{fragments: map[string]*gqlFragment{}}
	for p.tok.kind != tEOF {
		switch {
		case p.isPunct("{"):
			sel, err := p.selectionSet()
			if err != nil {
				return nil, err
			}
			doc.ops = append(doc.ops, &gqlOperation{typ: "query", sel: sel})
		case p.tok.kind == tName && (p.tok.val == "query" || p.tok.val == "mutation" || p.tok.val == "subscription"):
			op, err := p.operation()
			if err != nil {
				return nil, err
			}
			doc.ops = append(doc.ops, op)
		case p.tok.kind == tName && p.tok.val == "fragment":
			if err := p.advance(); err != nil {
				return nil, err
			}
			name, err := p.name()
			if err != nil {
				return nil, err
			}
			if err := p.expectName("on"); err != nil {
				return nil, err
			}
			tc, err := p.name()
			if err != nil {
				return nil, err
			}
			if _, err := p.directives(); err != nil {
				return nil, err
			}
			sel, err := p.selectionSet()
			if err != nil {
				return nil, err
			}
			doc.fragments[name] = &gqlFragment{typeCond: tc, sel: sel}
		default:
			return nil, p.unexpected()
		}
	}
	if len(doc.ops) == 0 {
		return nil, fmt.Errorf("document contains no operation")
	}
	return doc, nil
}

func (p *parser) advance() error {
	t, err := p.lx.next()
	if err != nil {
		return err
	}
	p.tok = t
	return nil
}

func (p *parser) isPunct(s string) bool { return p.tok.kind == tPunct && p.tok.val == s }

func (p *parser) unexpected() error {
	if p.tok.kind == tEOF {
		return fmt.Errorf("unexpected end of document")
	}
	return fmt.Errorf("unexpected %q at %d", p.tok.val, p.tok.pos)
}

func (p *parser) expect(s string) error {
	if !p.isPunct(s) {
		return p.unexpected()
	}
	return p.advance()
}

func (p *parser) expectName(s string) error {
	if p.tok.kind != tName || p.tok.val != s {
		return p.unexpected()
	}
	return p.advance()
}

func (p *parser) name() (string, error) {
	if p.tok.kind != tName {
		return "", p.unexpected()
	}
	n := p.tok.val
	return n, p.advance()
}

func (p *parser) operation() (*gqlOperation, error) {
	op := &gqlOperation{typ: p.tok.val}
	if err := p.advance(); err != nil {
		return nil, err
	}
	if p.tok.kind == tName {
		op.name = p.tok.val
		if err := p.advance(); err != nil {
			return nil, err
		}
	}
	if p.isPunct("(") {
		if err := p.advance(); err != nil {
			return nil, err
		}
		for !p.isPunct(")") {
			if err := p.expect("$"); err != nil {
				return nil, err
			}
			vn, err := p.name()
			if err != nil {
				return nil, err
			}
			if err := p.expect(":"); err != nil {
				return nil, err
			}
			if err := p.typeRef(); err != nil {
				return nil, err
			}
			vd := gqlVarDef{name: vn}
			if p.isPunct("=") {
				if err := p.advance(); err != nil {
					return nil, err
				}
				v, err := p.value(true)
				if err != nil {
					return nil, err
				}
				vd.def = &v
			}
			if _, err := p.directives(); err != nil {
				return nil, err
			}
			op.vars = append(op.vars, vd)
		}
		if err := p.advance(); err != nil {
			return nil, err
		}
	}
	if _, err := p.directives(); err != nil {
		return nil, err
	}
	sel, err := p.selectionSet()
	if err != nil {
		return nil, err
	}
	op.sel = sel
	return op, nil
}

func (p *parser) typeRef() error {
	if p.isPunct("[") {
		if err := p.advance(); err != nil {
			return err
		}
		if err := p.typeRef(); err != nil {
			return err
		}
		if err := p.expect("]"); err != nil {
			return err
		}
	} else if _, err := p.name(); err != nil {
		return err
	}
	if p.isPunct("!") {
		return p.advance()
	}
	return nil
}

func (p *parser) directives() ([]gqlDirective, error) {
	var ds []gqlDirective
	for p.isPunct("@") {
		if err := p.advance(); err != nil {
			return nil, err
		}
		n, err := p.name()
		if err != nil {
			return nil, err
		}
		args, err := p.arguments()
		if err != nil {
			return nil, err
		}
		ds = append(ds, gqlDirective{name: n, args: args})
	}
	return ds, nil
}

func (p *parser) arguments() ([]gqlArg, error) {
	if !p.isPunct("(") {
		return nil, nil
	}
	if err := p.advance(); err != nil {
		return nil, err
	}
	var args []gqlArg
	for !p.isPunct(")") {
		n, err := p.name()
		if err != nil {
			return nil, err
		}
		if err := p.expect(":"); err != nil {
			return nil, err
		}
		v, err := p.value(false)
		if err != nil {
			return nil, err
		}
		args = append(args, gqlArg{name: n, val: v})
	}
	return args, p.advance()
}

func (p *parser) value(constOnly bool) (gqlValue, error) {
	if p.depth++; p.depth > maxParseDepth {
		return gqlValue{}, fmt.Errorf("document nested too deeply")
	}
	defer func() { p.depth-- }()
	t := p.tok
	switch {
	case t.kind == tPunct && t.val == "$" && !constOnly:
		if err := p.advance(); err != nil {
			return gqlValue{}, err
		}
		n, err := p.name()
		return gqlValue{kind: "var", s: n}, err
	case t.kind == tInt:
		return gqlValue{kind: "int", s: t.val}, p.advance()
	case t.kind == tFloat:
		return gqlValue{kind: "float", s: t.val}, p.advance()
	case t.kind == tString:
		return gqlValue{kind: "string", s: t.val}, p.advance()
	case t.kind == tName:
		switch t.val {
		case "true", "false":
			return gqlValue{kind: "bool", s: t.val}, p.advance()
		case "null":
			return gqlValue{kind: "null"}, p.advance()
		}
		return gqlValue{kind: "enum", s: t.val}, p.advance()
	case t.kind == tPunct && t.val == "[":
		if err := p.advance(); err != nil {
			return gqlValue{}, err
		}
		v := gqlValue{kind: "list"}
		for !p.isPunct("]") {
			e, err := p.value(constOnly)
			if err != nil {
				return gqlValue{}, err
			}
			v.list = append(v.list, e)
		}
		return v, p.advance()
	case t.kind == tPunct && t.val == "{":
		if err := p.advance(); err != nil {
			return gqlValue{}, err
		}
		v := gqlValue{kind: "object"}
		for !p.isPunct("}") {
			n, err := p.name()
			if err != nil {
				return gqlValue{}, err
			}
			if err := p.expect(":"); err != nil {
				return gqlValue{}, err
			}
			e, err := p.value(constOnly)
			if err != nil {
				return gqlValue{}, err
			}
			v.fields = append(v.fields, gqlObjField{name: n, val: e})
		}
		return v, p.advance()
	}
	return gqlValue{}, p.unexpected()
}

func (p *parser) selectionSet() ([]gqlSelection, error) {
	if err := p.expect("{"); err != nil {
		return nil, err
	}
	if p.depth++; p.depth > maxParseDepth {
		return nil, fmt.Errorf("document nested too deeply")
	}
	defer func() { p.depth-- }()
	var sels []gqlSelection
	for !p.isPunct("}") {
		if p.tok.kind == tEOF {
			return nil, p.unexpected()
		}
		if p.isPunct("...") {
			if err := p.advance(); err != nil {
				return nil, err
			}
			s := gqlSelection{isFragment: true}
			if p.tok.kind == tName && p.tok.val != "on" {
				s.spread = p.tok.val
				if err := p.advance(); err != nil {
					return nil, err
				}
				ds, err := p.directives()
				if err != nil {
					return nil, err
				}
				s.directives = ds
			} else {
				s.inline = true
				if p.tok.kind == tName && p.tok.val == "on" {
					if err := p.advance(); err != nil {
						return nil, err
					}
					tc, err := p.name()
					if err != nil {
						return nil, err
					}
					s.typeCond = tc
				}
				ds, err := p.directives()
				if err != nil {
					return nil, err
				}
				s.directives = ds
				sub, err := p.selectionSet()
				if err != nil {
					return nil, err
				}
				s.sub = sub
			}
			sels = append(sels, s)
			continue
		}
		n, err := p.name()
		if err != nil {
			return nil, err
		}
		s := gqlSelection{name: n}
		if p.isPunct(":") {
			if err := p.advance(); err != nil {
				return nil, err
			}
			s.alias = n
			if s.name, err = p.name(); err != nil {
				return nil, err
			}
		}
		if s.args, err = p.arguments(); err != nil {
			return nil, err
		}
		if s.directives, err = p.directives(); err != nil {
			return nil, err
		}
		if p.isPunct("{") {
			if s.sub, err = p.selectionSet(); err != nil {
				return nil, err
			}
		}
		sels = append(sels, s)
	}
	return sels, p.advance()
}

// ---- execution helpers ----

// pickOperation chooses the operation to run, like a GraphQL server does.
func (d *gqlDocument) pickOperation(name string) (*gqlOperation, error) {
	if name == "" {
		if len(d.ops) != 1 {
			return nil, fmt.Errorf("operationName is required when the document has %d operations", len(d.ops))
		}
		return d.ops[0], nil
	}
	for _, op := range d.ops {
		if op.name == name {
			return op, nil
		}
	}
	return nil, fmt.Errorf("no operation named %q", name)
}

// resolveValue turns an AST value into plain Go values (as encoding/json
// would produce: string, float64/int64, bool, nil, []any, map[string]any).
func resolveValue(v gqlValue, vars map[string]any) any {
	switch v.kind {
	case "var":
		return vars[v.s]
	case "int":
		n, err := strconv.ParseInt(v.s, 10, 64)
		if err != nil {
			return v.s
		}
		return float64(n)
	case "float":
		f, _ := strconv.ParseFloat(v.s, 64)
		return f
	case "string", "enum":
		return v.s
	case "bool":
		return v.s == "true"
	case "null":
		return nil
	case "list":
		out := make([]any, 0, len(v.list))
		for _, e := range v.list {
			out = append(out, resolveValue(e, vars))
		}
		return out
	case "object":
		out := map[string]any{}
		for _, f := range v.fields {
			out[f.name] = resolveValue(f.val, vars)
		}
		return out
	}
	return nil
}

func resolveArgs(args []gqlArg, vars map[string]any) map[string]any {
	out := make(map[string]any, len(args))
	for _, a := range args {
		out[a.name] = resolveValue(a.val, vars)
	}
	return out
}

// included evaluates @skip / @include.
func included(ds []gqlDirective, vars map[string]any) bool {
	for _, d := range ds {
		args := resolveArgs(d.args, vars)
		b, _ := args["if"].(bool)
		switch d.name {
		case "skip":
			if b {
				return false
			}
		case "include":
			if !b {
				return false
			}
		}
	}
	return true
}

// flatten expands fragments and applies directives, giving the fields to
// resolve on an object of type typeName.
func (d *gqlDocument) flatten(sels []gqlSelection, typeName string, vars map[string]any, depth int) ([]gqlSelection, error) {
	if depth > 20 {
		return nil, fmt.Errorf("fragment nesting too deep")
	}
	var out []gqlSelection
	for _, s := range sels {
		if !included(s.directives, vars) {
			continue
		}
		if !s.isFragment {
			out = append(out, s)
			continue
		}
		var sub []gqlSelection
		tc := s.typeCond
		if s.spread != "" {
			f, ok := d.fragments[s.spread]
			if !ok {
				//lint:ignore ST1005 the wording of graphql-ruby, which serves Fly's API
				return nil, fmt.Errorf("Fragment %s was used, but not defined", s.spread)
			}
			tc, sub = f.typeCond, f.sel
		} else {
			sub = s.sub
		}
		if tc != "" && tc != typeName {
			continue
		}
		more, err := d.flatten(sub, typeName, vars, depth+1)
		if err != nil {
			return nil, err
		}
		out = append(out, more...)
	}
	return out, nil
}

// gqlError is one entry of the response's "errors" array.
type gqlError struct {
	Message    string         `json:"message"`
	Path       []any          `json:"path,omitempty"`
	Extensions map[string]any `json:"extensions,omitempty"`
}

func (e *gqlError) Error() string { return e.Message }

func newGQLError(code, format string, args ...any) *gqlError {
	e := &gqlError{Message: fmt.Sprintf(format, args...)}
	if code != "" {
		e.Extensions = map[string]any{"code": code}
	}
	return e
}

// obj is a GraphQL object: its type name and its fields. A field value may be
// a resolver func(args map[string]any) (any, error) for fields with arguments
// or for lazily computed values.
type obj struct {
	typ    string
	fields map[string]any
}

type resolver func(args map[string]any) (any, error)

// project walks the selection set over v and returns the JSON-ready value.
func (d *gqlDocument) project(v any, sels []gqlSelection, vars map[string]any, path []any) (any, error) {
	switch x := v.(type) {
	case nil:
		return nil, nil
	case *obj:
		if x == nil {
			return nil, nil
		}
		if len(sels) == 0 {
			return nil, &gqlError{Message: fmt.Sprintf("Field must have selections (%s returns %s but has no selections)", pathString(path), x.typ), Path: path, Extensions: map[string]any{"code": "selectionMismatch"}}
		}
		fields, err := d.flatten(sels, x.typ, vars, 0)
		if err != nil {
			return nil, &gqlError{Message: err.Error(), Path: path, Extensions: map[string]any{"code": "useAndDefineFragment"}}
		}
		out := newOrderedMap(len(fields))
		for _, f := range fields {
			key := f.name
			if f.alias != "" {
				key = f.alias
			}
			fpath := append(append([]any{}, path...), key)
			if f.name == "__typename" {
				out.set(key, x.typ)
				continue
			}
			fv, ok := x.fields[f.name]
			if !ok {
				return nil, &gqlError{Message: fmt.Sprintf("Field '%s' doesn't exist on type '%s'", f.name, x.typ), Path: fpath, Extensions: map[string]any{"code": "undefinedField", "typeName": x.typ, "fieldName": f.name}}
			}
			if r, ok := fv.(resolver); ok {
				fv, err = r(resolveArgs(f.args, vars))
				if err != nil {
					if ge, ok := err.(*gqlError); ok {
						if ge.Path == nil {
							ge.Path = fpath
						}
						return nil, ge
					}
					return nil, &gqlError{Message: err.Error(), Path: fpath}
				}
			}
			pv, err := d.project(fv, f.sub, vars, fpath)
			if err != nil {
				return nil, err
			}
			out.set(key, pv)
		}
		return out, nil
	case []*obj:
		out := make([]any, len(x))
		for i, e := range x {
			pv, err := d.project(e, sels, vars, append(append([]any{}, path...), i))
			if err != nil {
				return nil, err
			}
			out[i] = pv
		}
		return out, nil
	default:
		if len(sels) > 0 {
			return nil, &gqlError{Message: fmt.Sprintf("Selections can't be made on scalars (%s)", pathString(path)), Path: path, Extensions: map[string]any{"code": "selectionMismatch"}}
		}
		return v, nil
	}
}

func pathString(path []any) string {
	var parts []string
	for _, p := range path {
		parts = append(parts, fmt.Sprint(p))
	}
	return strings.Join(parts, ".")
}

// orderedMap keeps the selection order in the JSON output.
type orderedMap struct {
	keys []string
	vals map[string]any
}

func newOrderedMap(n int) *orderedMap {
	return &orderedMap{keys: make([]string, 0, n), vals: make(map[string]any, n)}
}

func (m *orderedMap) set(k string, v any) {
	if _, ok := m.vals[k]; !ok {
		m.keys = append(m.keys, k)
	}
	m.vals[k] = v
}

func (m *orderedMap) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, k := range m.keys {
		if i > 0 {
			b.WriteByte(',')
		}
		kb, _ := json.Marshal(k)
		b.Write(kb)
		b.WriteByte(':')
		vb, err := json.Marshal(m.vals[k])
		if err != nil {
			return nil, err
		}
		b.Write(vb)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}
