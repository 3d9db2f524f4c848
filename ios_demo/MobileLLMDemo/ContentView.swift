import SwiftUI

/// A chat screen: streams tokens and shows tokens/s.
struct ContentView: View {
    @State private var generator: (any TextGenerator)?
    @State private var transcript = ""
    @State private var prompt = ""
    @State private var status = "loading the bundled model…"
    @State private var busy = false

    var body: some View {
        VStack(alignment: .leading, spacing: 12) {
            Text(generator.map { "\($0.manifest.modelName) · \($0.manifest.scheme) · context \($0.manifest.contextLength)" } ?? "MobileLLM")
                .font(.headline)
            ScrollView { Text(transcript).frame(maxWidth: .infinity, alignment: .leading).textSelection(.enabled) }
            Text(status).font(.caption).foregroundStyle(.secondary)
            HStack {
                TextField("Type a prompt", text: $prompt).textFieldStyle(.roundedBorder)
                Button("Generate") { run() }.disabled(busy || generator == nil || prompt.isEmpty)
            }
        }
        .padding()
        .task {
            do {
                generator = try await makeGenerator()
                status = "ready"
            } catch {
                status = error.localizedDescription
            }
        }
    }

    private func run() {
        guard let generator else { return }
        let text = prompt
        transcript += "\n> \(text)\n"
        busy = true
        Task.detached {
            do {
                let rate = try await generator.generate(prompt: text) { piece in
                    Task { @MainActor in transcript += piece }
                }
                await MainActor.run { status = String(format: "%.1f tokens/s", rate); busy = false }
            } catch {
                await MainActor.run { status = error.localizedDescription; busy = false }
            }
        }
    }
}
