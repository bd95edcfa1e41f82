// Package cli holds what the commands' command lines share.
package cli

import (
	"fmt"
	"strconv"
	"time"
)

// Duration is a flag value given in seconds ("30", "0.5"), as the other languages' examples take it,
// or as a Go duration ("30s", "10m").
type Duration struct{ time.Duration }

func (d *Duration) String() string { return d.Duration.String() }

func (d *Duration) Set(text string) error {
	if seconds, err := strconv.ParseFloat(text, 64); err == nil {
		d.Duration = time.Duration(seconds * float64(time.Second))
		return nil
	}
	parsed, err := time.ParseDuration(text)
	if err != nil {
		return fmt.Errorf("%q is neither seconds nor a duration such as 30s", text)
	}
	d.Duration = parsed
	return nil
}
