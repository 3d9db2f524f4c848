#if canImport(CoreAI)
import CoreAI
import Foundation
import Tokenizers

/// Greedy (or temperature) generation with the bundled Core AI model (iOS 27). Its two functions,
/// "prefill" (a prompt) and "decode" (one token), take `input_ids` int32 [1, n] and `input_pos`
/// int32 [n] (the tokens' positions) and return float32 `logits` [1, n, vocab]; both read and
/// write the same KV-cache states, which this class owns: one zeroed NDArray per state, passed to
/// every call.
///
/// Written against Apple's published Core AI API (AIModel, InferenceFunction, NDArray); it is not
/// compiled here (no Xcode 27 on the project's Linux machine), so treat it as the integration
/// recipe, not as tested code.
@available(iOS 27.0, macOS 27.0, *)
final class CoreAIGenerator: TextGenerator {
    let manifest: BundleManifest
    private let prefill: InferenceFunction
    private let decode: InferenceFunction
    private let tokenizer: Tokenizer
    private let stateNames: [String]
    private let stateShapes: [[Int]]
    private var states: [NDArray] = []

    init() async throws {
        let (manifest, folder) = try BundleManifest.load()
        self.manifest = manifest
        guard let name = manifest.files.aimodel else { throw DemoError.missing("no Core AI model in bundle.json") }
        // The first load specializes the model for this device (slow once, then cached by Core AI).
        let model = try await AIModel(contentsOf: folder.appendingPathComponent(name))
        guard let prefill = try model.loadFunction(named: "prefill"),
              let decode = try model.loadFunction(named: "decode") else {
            throw DemoError.missing("\(name) has no prefill/decode functions (functions: \(model.functionNames))")
        }
        self.prefill = prefill
        self.decode = decode
        stateNames = decode.descriptor.stateNames
        stateShapes = try stateNames.map { state in
            guard case .ndArray(let descriptor) = decode.descriptor.stateDescriptor(of: state) else {
                throw DemoError.missing("state \(state) is not an array")
            }
            return descriptor.shape
        }
        tokenizer = try await AutoTokenizer.from(modelFolder: folder)
    }

    /// A fresh, zeroed KV cache: positions past the sequence are masked, but never uninitialised
    /// memory (a NaN there would survive the mask).
    private func resetStates() {
        states = stateShapes.map { shape in
            NDArray(scalars: [Float16](repeating: 0, count: shape.reduce(1, *)), shape: shape)
        }
    }

    func generate(prompt: String, onText: @escaping (String) -> Void) async throws -> Double {
        resetStates()
        var ids = [manifest.bosId] + tokenizer.encode(text: prompt, addSpecialTokens: false)
        let budget = min(manifest.generation.maxNewTokens, manifest.contextLength - ids.count)
        guard budget > 0 else { throw DemoError.missing("the prompt does not fit the context of \(manifest.contextLength)") }
        var logits = try await step(ids, start: 0, function: prefill)
        var generated: [Int] = []
        let start = Date()
        for _ in 0..<budget {
            let next = pick(logits, temperature: manifest.generation.temperature)
            if manifest.eosIds.contains(next) { break }
            generated.append(next)
            onText(tokenizer.decode(tokens: [next]))
            ids.append(next)
            logits = try await step([next], start: ids.count - 1, function: decode)
        }
        let seconds = Date().timeIntervalSince(start)
        return seconds > 0 ? Double(generated.count) / seconds : 0
    }

    /// Runs `tokens` at positions start ..< start + n; returns the last position's logits.
    private func step(_ tokens: [Int], start: Int, function: InferenceFunction) async throws -> [Float] {
        let n = tokens.count
        let inputs = [
            "input_ids": NDArray(scalars: tokens.map { Int32($0) }, shape: [1, n]),
            "input_pos": NDArray(scalars: (start..<(start + n)).map { Int32($0) }, shape: [n]),
        ]
        var views = InferenceFunction.MutableViews()
        for index in states.indices { views.insert(&states[index], for: stateNames[index]) }
        var outputs = try await function.run(inputs: inputs, states: views)
        guard let logits = outputs.remove("logits")?.ndArray else { throw DemoError.missing("no logits") }
        let vocab = logits.shape[2]
        return logits.view(as: Float.self).withUnsafePointer { pointer, _, strides in
            (0..<vocab).map { pointer[(n - 1) * strides[1] + $0 * strides[2]] }
        }
    }
}
#endif
