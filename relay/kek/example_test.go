package kek_test

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/clusterconnect/clusterconnect/relay/kek"
)

func Example() {
	dir, _ := os.MkdirTemp("", "kek")
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "kek")
	// A development relay makes its own key once; an operator supplies one.
	if err := kek.Generate(file); err != nil {
		fmt.Println(err)
		return
	}
	key, err := kek.Load(file, "")
	if err != nil {
		fmt.Println(err)
		return
	}
	stored := []byte("-----BEGIN EC PRIVATE KEY-----\n…")
	fmt.Println("legacy value sealed:", kek.IsSealed(stored))
	sealed, _ := key.Seal(stored)
	fmt.Println("sealed:", kek.IsSealed(sealed))
	plain, _ := key.Open(sealed)
	fmt.Printf("opened: %.30s\n", plain)
	// Output:
	// legacy value sealed: false
	// sealed: true
	// opened: -----BEGIN EC PRIVATE KEY-----
}
