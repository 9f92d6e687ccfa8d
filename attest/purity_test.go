package attest_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"strconv"
	"testing"
)

// The prover's files may use the TPM; the verifier's may not use them.
var (
	proverFiles   = []string{"ak.go", "quote.go", "ek.go", "enroll_tpm.go", "ekpub.go", "clientkey.go", "signkey.go", "keypolicy_tpm.go"}
	verifierFiles = []string{"verify.go", "policy.go", "evidence.go", "akpub.go", "enroll.go", "errors.go", "clientkeyverify.go", "certify.go", "keypolicy.go"}
	// Imports a pure verifier has no use for.
	impureImports = []string{
		"github.com/google/go-tpm/tpm2/transport",
		"github.com/google/go-tpm/tpm2/transport/linuxtpm",
		"github.com/keywarden/keywarden/internal/tpmdev",
		"os", "os/exec", "net", "net/http/httptest", "io/fs", "io/ioutil", "syscall", "unsafe",
	}
)

// TestVerifierIsPure holds the verifier to its promise: no TPM, no I/O,
// nothing declared by the prover.
func TestVerifierIsPure(t *testing.T) {
	fset := token.NewFileSet()
	prover := map[string]string{}
	for _, name := range proverFiles {
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				if d.Recv == nil {
					prover[d.Name.Name] = name
				}
			case *ast.GenDecl:
				for _, s := range d.Specs {
					switch s := s.(type) {
					case *ast.TypeSpec:
						prover[s.Name.Name] = name
					case *ast.ValueSpec:
						for _, n := range s.Names {
							prover[n.Name] = name
						}
					}
				}
			}
		}
	}
	if len(prover) < 10 {
		t.Fatalf("found only %d prover declarations; did the files move?", len(prover))
	}
	for _, name := range verifierFiles {
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			for _, bad := range impureImports {
				if path == bad {
					t.Errorf("%s imports %s", name, path)
				}
			}
		}
		// Selector names (x.Sel), struct field names and keys of struct
		// literals name fields or other packages' declarations; only the
		// remaining bare identifiers can name the prover's.
		sels := map[*ast.Ident]bool{}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.SelectorExpr:
				sels[n.Sel] = true
			case *ast.Field:
				for _, id := range n.Names {
					sels[id] = true
				}
			case *ast.KeyValueExpr:
				if id, ok := n.Key.(*ast.Ident); ok {
					sels[id] = true
				}
			}
			return true
		})
		ast.Inspect(f, func(n ast.Node) bool {
			id, ok := n.(*ast.Ident)
			if ok && !sels[id] {
				if from, isProver := prover[id.Name]; isProver {
					t.Errorf("%s: %s uses %s from the prover's %s", fset.Position(id.Pos()), name, id.Name, from)
				}
			}
			return true
		})
	}
}
