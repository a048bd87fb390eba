// Package kubejoin finds the first members an agent joins from the
// Kubernetes API: one LIST of the Nodes at start (weft agent
// --join-from-kubernetes), turned into a few gossip addresses. Nothing
// else of the agent talks to the apiserver: no watch and no periodic call,
// since once joined the mesh learns of every member by gossip. Overlays that
// watched the apiserver from every node melted it at a few thousand nodes;
// one list per agent start, served from the apiserver's cache, does not.
package kubejoin
