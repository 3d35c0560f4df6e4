"""Where users plug the engine in: a LangChain and a LlamaIndex vector store (`integrations.langchain`,
`integrations.llama_index`) over one document layer (`integrations.documents`), and an HTTP server
(`integrations.server`, the `matryoshka serve` command). Each needs its optional extra."""
