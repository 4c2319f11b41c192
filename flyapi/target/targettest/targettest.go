// Package targettest is the table of target lists every implementation of
// the target grammar is tested against: package target's parser, the
// webhook's field.ErrorList wrapping of it, and the MachineProxy CRD's CEL
// rules in a real kube-apiserver.
package targettest

import (
	_ "embed"
	"encoding/json"
	"fmt"
)

//go:embed cases.json
var casesJSON []byte

// Case is one target list and what the grammar makes of it: either Targets
// (canonical host:port, in order) or Problems (in order).
type Case struct {
	Name  string `json:"name"`
	Value string `json:"value"`
	// Targets is what the list parses to; empty when it is refused.
	Targets []string `json:"targets,omitempty"`
	// Problems is every problem reported, in order.
	Problems []Problem `json:"problems,omitempty"`
	// FirstProblemsOnly: Problems lists only the first problems reported
	// (the rest repeat them).
	FirstProblemsOnly bool `json:"firstProblemsOnly,omitempty"`
	// CELAccepts marks a refused list the CRD's CEL rules let through (CEL
	// cannot express it); the controller's parser refuses it instead.
	CELAccepts bool `json:"celAccepts,omitempty"`
}

// Problem is one expected target.Problem, its Kind by name ("Invalid",
// "Required", "Duplicate", "TooMany").
type Problem struct {
	Kind   string `json:"kind"`
	Value  string `json:"value,omitempty"`
	Count  int    `json:"count,omitempty"`
	Detail string `json:"detail"`
}

// Cases returns the table, in file order.
func Cases() []Case {
	var cases []Case
	if err := json.Unmarshal(casesJSON, &cases); err != nil {
		panic(fmt.Sprintf("targettest: cases.json: %v", err))
	}
	return cases
}
